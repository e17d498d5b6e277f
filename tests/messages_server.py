"""A Messages API server on loopback for tests: the real `anthropic` SDK talks to it.

It answers from a script (a tool_use answer, an error status, a delay, a text-only answer) and
records every request, headers included, so tests can check what left the process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.processes import free_port


class MessagesServer:
    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.post("/v1/messages")(self._messages)

    async def _messages(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        step = self.script.pop(0) if self.script else {"status": 500}
        if "sleep" in step:
            await asyncio.sleep(step["sleep"])
        if "status" in step:
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(step["status"], "api_error")
            return JSONResponse(
                {"type": "error", "error": {"type": kind, "message": "scripted"}},
                status_code=step["status"],
                headers={"retry-after-ms": "10"},
            )
        tool = body["tool_choice"]["name"]
        content = (
            [{"type": "text", "text": step["text"]}]
            if "text" in step
            else [
                {
                    "type": "tool_use",
                    "id": f"toolu_{len(self.requests)}",
                    "name": tool,
                    "input": step["input"],
                }
            ]
        )
        return JSONResponse(
            {
                "id": f"msg_{len(self.requests)}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": "tool_use" if "input" in step else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 120, "output_tokens": 30},
            }
        )


@contextmanager
def messages_server() -> Iterator[tuple[MessagesServer, str]]:
    server = MessagesServer()
    port = free_port()
    config = uvicorn.Config(server.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if uv.started:
            break
        time.sleep(0.02)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
