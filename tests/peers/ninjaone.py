"""A NinjaOne API peer on loopback, for the RMM connector's tests.

It follows NinjaOne's public API v2 documentation (app.ninjarmm.com/apidocs, "Public API v2":
OAuth 2.0 client credentials at `/ws/oauth/token`; `GET /v2/devices`; `GET
/v2/device/{id}/scripting/options`; `POST /v2/device/{id}/script/run` with
`{"type": "SCRIPT"|"ACTION", "id": <script id>, "uid": <action uid>, "parameters": str,
"runAs": str}`; `GET /v2/device/{id}/windows-services`; `POST
/v2/device/{id}/windows-service/{serviceId}/control` with `{"action": "START"|"PAUSE"|"STOP"|
"RESTART"}`; `POST /v2/device/{id}/reboot/{NORMAL|FORCED}` with `{"reason": str}`) and refuses
(400) any request that departs from those shapes, so a connector that sends what NinjaOne
would reject fails its test. It records the requests it accepted.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from tests.peers.http_peer import Answer, RestPeer


@dataclass
class Device:
    id: int
    name: str
    services: list[str] = field(default_factory=lambda: ["Spooler", "W32Time", "wuauserv"])


@dataclass
class NinjaOnePeer(RestPeer):
    client_id: str = "msp-connector"
    client_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    devices: list[Device] = field(default_factory=list)
    scripts: dict[str, int] = field(default_factory=dict)  # name -> id
    token_path = "/ws/oauth/token"

    def tool(self) -> dict[str, object]:
        return {
            "kind": "ninjaone",
            "base_url": self.url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }

    def token(self, form: dict[str, str], headers: Any) -> Answer:
        if form.get("grant_type") != "client_credentials":
            return "grant_type must be client_credentials"
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            return 401, {"error": "invalid_client"}
        return self.issue({"scope": form.get("scope", "")})

    def _device(self, device_id: str) -> Device | None:
        return next((d for d in self.devices if str(d.id) == device_id), None)

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        if method == "GET" and path == "/v2/devices":
            for k in query:
                if k not in ("pageSize", "after", "df"):
                    return f"unknown query parameter {k}"
            if any(not query[k].isdigit() for k in ("pageSize", "after") if k in query):
                return "pageSize and after are numbers"
            after = int(query.get("after", 0))
            size = int(query.get("pageSize", 100))
            found = [d for d in self.devices if d.id > after][:size]
            return 200, [
                {
                    "id": d.id,
                    "systemName": d.name,
                    "dnsName": f"{d.name}.corp.test",
                    "nodeClass": "WINDOWS_WORKSTATION",
                    "offline": False,
                }
                for d in found
            ]
        m = re.fullmatch(r"/v2/device/(\d+)/(.+)", path)
        if not m:
            return 404, {"resultCode": "NOT_FOUND"}
        device = self._device(m.group(1))
        if device is None:
            return 404, {"resultCode": "DEVICE_NOT_FOUND"}
        rest = m.group(2)
        if method == "GET" and rest == "scripting/options":
            return 200, {
                "scripts": [
                    {"id": i, "name": n, "language": "powershell", "architecture": ["64"]}
                    for n, i in self.scripts.items()
                ],
                "credentials": {"roles": ["system"]},
            }
        if method == "POST" and rest == "script/run":
            if not isinstance(body, dict) or body.get("type") not in ("SCRIPT", "ACTION"):
                return "type must be SCRIPT or ACTION"
            if set(body) - {"type", "id", "uid", "parameters", "runAs"}:
                return f"unknown fields {sorted(set(body) - {'type', 'id', 'uid', 'parameters', 'runAs'})}"
            if body["type"] == "SCRIPT" and not isinstance(body.get("id"), int):
                return "a SCRIPT run names the script's numeric id"
            if body.get("id") not in self.scripts.values():
                return 404, {"resultCode": "SCRIPT_NOT_FOUND"}
            if "parameters" in body and not isinstance(body["parameters"], str):
                return "parameters is a string"
            return 204, None
        if method == "GET" and rest == "windows-services":
            return 200, [
                {"name": s, "displayName": s, "state": "RUNNING", "startType": "AUTO_START"}
                for s in device.services
            ]
        svc = re.fullmatch(r"windows-service/([^/]+)/control", rest)
        if method == "POST" and svc:
            if (
                not isinstance(body, dict)
                or set(body) != {"action"}
                or body["action"] not in ("START", "PAUSE", "STOP", "RESTART")
            ):
                return 'the body is {"action": START|PAUSE|STOP|RESTART}'
            if svc.group(1) not in device.services:
                return 404, {"resultCode": "SERVICE_NOT_FOUND"}
            return 204, None
        reboot = re.fullmatch(r"reboot/([A-Z]+)", rest)
        if method == "POST" and reboot:
            if reboot.group(1) not in ("NORMAL", "FORCED"):
                return "the reboot mode is NORMAL or FORCED"
            if body is not None and (not isinstance(body, dict) or set(body) - {"reason"}):
                return 'the body is {"reason": str}'
            return 204, None
        return 404, {"resultCode": "NOT_FOUND"}
