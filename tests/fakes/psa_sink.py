"""A PSA stand-in on loopback that records the notes posted to it: for the demo (the packet
service posts into it like into a real PSA), tests and benchmarks. It answers the note routes
of ConnectWise, Autotask and HaloPSA and a generic webhook path, and the routes that set a
ticket's category (kept in `categories`), and can be told to fail the next N writes (an
outage)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cli.processes import free_port


class PsaSink:
    def __init__(self) -> None:
        self.notes: list[dict[str, Any]] = []
        self.categories: list[dict[str, Any]] = []
        self.failures: list[int] = []  # status codes to answer the next posts with
        self.attempts = 0
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.post("/v4_6_release/apis/3.0/service/tickets/{ticket_id}/notes")(self._note("connectwise"))
        self.app.post("/ATServicesRest/V1.0/Tickets/{ticket_id}/Notes")(self._note("autotask"))
        self.app.post("/api/Actions")(self._note("halopsa"))
        self.app.post("/hook")(self._note("webhook"))
        self.app.get("/notes")(self._list)
        self.app.patch("/v4_6_release/apis/3.0/service/tickets/{ticket_id}")(self._category("connectwise"))
        self.app.patch("/ATServicesRest/V1.0/Tickets")(self._category("autotask"))
        self.app.post("/api/Tickets")(self._category("halopsa"))
        # Each PSA's own way of listing a ticket's notes.
        self.app.get("/v4_6_release/apis/3.0/service/tickets/{ticket_id}/notes")(self._listed("connectwise"))
        self.app.get("/ATServicesRest/V1.0/Tickets/{ticket_id}/Notes")(self._listed("autotask"))
        self.app.get("/api/Actions")(self._listed("halopsa"))
        self.lookups = 0

    def _category(self, kind: str) -> Any:
        async def receive(request: Request) -> JSONResponse:
            body = await request.json()
            return self._set_category(kind, request, body)

        return receive

    def _set_category(self, kind: str, request: Request, body: Any) -> JSONResponse:
        with self._lock:
            self.attempts += 1
            if self.failures:
                return JSONResponse({"error": "scripted outage"}, status_code=self.failures.pop(0))
            self.categories.append(
                {"kind": kind, "path": request.url.path, "headers": dict(request.headers), "body": body}
            )
        return JSONResponse({"itemId": 1} if kind == "autotask" else body, status_code=200)

    def _note(self, kind: str) -> Any:
        async def receive(request: Request) -> JSONResponse:
            body = await request.json()
            if kind == "webhook" and isinstance(body, dict) and "set_category" in body:
                return self._set_category(kind, request, body)
            with self._lock:
                self.attempts += 1
                if self.failures:
                    return JSONResponse({"error": "scripted outage"}, status_code=self.failures.pop(0))
                note_id = len(self.notes) + 1
                self.notes.append(
                    {
                        "id": note_id,
                        "kind": kind,
                        "path": request.url.path,
                        "headers": dict(request.headers),
                        "body": body,
                        "received": time.time(),
                    }
                )
            return JSONResponse([{"id": note_id}] if kind == "halopsa" else {"id": note_id}, status_code=201)

        return receive

    def _listed(self, kind: str) -> Any:
        async def listed(request: Request) -> JSONResponse:
            ticket = request.path_params.get("ticket_id") or request.query_params.get("ticket_id", "")
            with self._lock:
                self.lookups += 1
                mine = [n for n in self.notes if n["kind"] == kind and _ticket_of(n) == str(ticket)]
            if kind == "connectwise":
                return JSONResponse([{"id": n["id"], "text": n["body"]["text"]} for n in mine])
            if kind == "autotask":
                return JSONResponse(
                    {"items": [{"id": n["id"], "description": n["body"]["description"]} for n in mine]}
                )
            return JSONResponse(
                {"actions": [{"id": n["id"], "note_html": n["body"][0]["note_html"]} for n in mine]}
            )

        return listed

    async def _list(self) -> dict[str, Any]:
        return {"notes": self.notes}


def _ticket_of(note: dict[str, Any]) -> str:
    body = note["body"]
    if note["kind"] == "halopsa":
        return str(body[0]["ticket_id"])
    if note["kind"] == "autotask":
        return str(body["ticketID"])
    return note["path"].split("/tickets/")[1].split("/")[0] if "/tickets/" in note["path"] else ""


@contextmanager
def psa_sink(port: int | None = None) -> Iterator[tuple[PsaSink, str]]:
    """A sink served on 127.0.0.1 in a thread; yields it and its base URL."""
    sink = PsaSink()
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(sink.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    try:
        yield sink, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
