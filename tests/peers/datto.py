"""A Datto RMM API peer on loopback, for the RMM connector's tests.

It follows Datto RMM's API v2 documentation (the account's API reference, "Datto RMM API v2":
an access token from `POST /auth/oauth/token`, password grant, the API key and secret as
username and password, the public client `public-client:public` in basic auth; `GET
/api/v2/account/devices` and `/api/v2/account/components`, paged, with `pageDetails`; `PUT
/api/v2/device/{deviceUid}/quickjob` with `{"jobName": str, "jobComponent": {"componentUid":
str, "variables": [{"name": str, "value": str}]}}`) and refuses (400) requests that depart
from those shapes.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.peers.http_peer import Answer, RestPeer


@dataclass
class DattoPeer(RestPeer):
    api_key: str = "datto-key"
    api_secret: str = field(default_factory=lambda: secrets.token_hex(12))
    devices: dict[str, str] = field(default_factory=dict)  # hostname -> uid
    components: dict[str, str] = field(default_factory=dict)  # name -> uid
    token_path = "/auth/oauth/token"

    def tool(self) -> dict[str, object]:
        return {
            "kind": "datto_rmm",
            "api_url": self.url,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
        }

    def token(self, form: dict[str, str], headers: Any) -> Answer:
        if headers.get("Authorization", "") != "Basic " + base64.b64encode(b"public-client:public").decode():
            return "the token request authenticates as the public client"
        if form.get("grant_type") != "password":
            return "grant_type must be password"
        if (form.get("username"), form.get("password")) != (self.api_key, self.api_secret):
            return 401, {"error": "invalid_grant"}
        return self.issue()

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        listing = {
            "/api/v2/account/devices": ("devices", "hostname", self.devices),
            "/api/v2/account/components": ("components", "name", self.components),
        }
        if method == "GET" and path in listing:
            if set(query) - {"page", "max"} or any(not v.isdigit() for v in query.values()):
                return "page and max are numbers, and the only parameters"
            key, name, items = listing[path]
            return 200, {
                "pageDetails": {"count": len(items), "nextPageUrl": None},
                key: [{"uid": uid, name: n} for n, uid in items.items()],
            }
        m = re.fullmatch(r"/api/v2/device/([0-9a-f-]{36})/quickjob", path)
        if method == "PUT" and m:
            if m.group(1) not in self.devices.values():
                return 404, {"message": "device not found"}
            if not isinstance(body, dict) or set(body) != {"jobName", "jobComponent"}:
                return "the body is {jobName, jobComponent}"
            job = body["jobComponent"]
            if (
                not isinstance(job, dict)
                or set(job) - {"componentUid", "variables"}
                or "componentUid" not in job
            ):
                return "jobComponent is {componentUid, variables}"
            if job["componentUid"] not in self.components.values():
                return 404, {"message": "component not found"}
            for v in job.get("variables", []):
                if not isinstance(v, dict) or set(v) != {"name", "value"}:
                    return "each variable is {name, value}"
            return 200, {"job": {"uid": str(uuid.uuid4()), "name": body["jobName"], "status": "scheduled"}}
        return 404, {"message": "not found"}
