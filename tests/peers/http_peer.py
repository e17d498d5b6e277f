"""The plumbing of the REST peers written for the tests (NinjaOne, Datto RMM): a threaded HTTP
server on loopback that takes an OAuth token request, checks the bearer token and JSON
bodies, hands each request to the peer's `route`, refuses (400) what departs from the
documented shapes and records what it accepted."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Answer = tuple[int, Any] | str  # (status, JSON body), or why the request is refused


@dataclass
class RestPeer:
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    server: ThreadingHTTPServer | None = None
    token_path = "/oauth/token"

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def token(self, form: dict[str, str], headers: Any) -> Answer:
        """Check a token request; the peer's own rules."""
        raise NotImplementedError

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        raise NotImplementedError

    def issue(self, extra: dict[str, Any] | None = None) -> tuple[int, Any]:
        token = secrets.token_hex(16)
        self.tokens.add(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600, **(extra or {})}

    def start(self) -> RestPeer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                return None

            def _send(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, answer: Answer) -> None:
                if isinstance(answer, str):
                    peer.refused.append(f"{self.command} {self.path}: {answer}")
                    return self._send(400, {"error": "bad_request", "message": answer})
                self._send(*answer)

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._handle("PUT")

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind = self.headers.get("Content-Type", "").split(";")[0]
                if url.path == peer.token_path and method == "POST":
                    if kind != "application/x-www-form-urlencoded":
                        return self._answer("the token request is a form")
                    form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                    return self._answer(peer.token(form, self.headers))
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer ") or auth[7:] not in peer.tokens:
                    return self._send(401, {"error": "unauthorized"})
                body: Any = None
                if raw:
                    if kind != "application/json":
                        return self._answer("bodies are JSON")
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        return self._answer("the body is not JSON")
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                answer = peer.route(method, url.path, query, body)
                if not isinstance(answer, str) and answer[0] < 400:
                    peer.calls.append((method, url.path, body))
                self._answer(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
