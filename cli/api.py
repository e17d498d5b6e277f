"""The platform's HTTP APIs as the `msp` command calls them (the standard library's client:
a command that only asks a service something answers in a fraction of a second)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ApiError(RuntimeError):
    """A service refused the request or could not be reached; the message says which and why."""


class Api:
    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.timeout_s = timeout_s

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data is not None else {})}
        request = urllib.request.Request(
            f"{self.base}{path}{query}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(
                f"cannot reach {self.base} ({getattr(exc, 'reason', exc)}): is the platform running? "
                "(`./msp up`, or name the service's URL)"
            ) from None
        doc = json.loads(raw) if raw else None
        if status not in ok:
            detail = doc.get("detail", doc) if isinstance(doc, dict) else doc
            raise ApiError(f"{method} {path}: {status}: {detail}")
        return doc
