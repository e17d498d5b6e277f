"""Datto RMM through its public API v2: an access token (OAuth password grant with the
account's API key and secret, as the public client), then `GET /api/v2/account/devices`,
`GET /api/v2/account/components` and `PUT /api/v2/device/{deviceUid}/quickjob`. Datto RMM runs
everything as components: scripts by their component name, and a service restart or a reboot
through the components the tenant names for them (variables carry the service name).
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from libs.common.jsontypes import Float
from services.automation.connectors.base import BearerToken, Connector, ConnectorConfig, StepFailed, call_json


class DattoConfig(ConnectorConfig):
    api_url: str  # e.g. https://merlot-api.centrastage.net
    api_key: str
    api_secret: str
    restart_service_component: str = "Restart Service"  # takes the variable "service"
    reboot_component: str = "Reboot Device"
    timeout_s: Float = 15.0


class DattoRmm(Connector):
    kind: ClassVar[str] = "datto_rmm"
    config_model: ClassVar[type[ConnectorConfig]] = DattoConfig
    actions: ClassVar[frozenset[str]] = frozenset(
        {"rmm.run_script", "rmm.restart_service", "rmm.reboot_device"}
    )
    config: DattoConfig

    def __init__(self, config: ConnectorConfig, *, secret: bytes) -> None:
        super().__init__(config, secret=secret)
        self.http = httpx.Client(base_url=self.config.api_url.rstrip("/"), timeout=self.config.timeout_s)
        self.token = BearerToken(self._grant, peer="Datto RMM", refused="Datto RMM refused the API key")

    def close(self) -> None:
        self.http.close()

    def _grant(self) -> httpx.Response:
        c = self.config
        return self.http.post(
            "/auth/oauth/token",
            auth=("public-client", "public"),
            data={"grant_type": "password", "username": c.api_key, "password": c.api_secret},
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return call_json(self.http, self.token, method, path, **kwargs)

    def _pages(self, path: str, key: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page = 0
        for _ in range(200):  # at most 200 pages
            doc = self._call("GET", path, params={"page": page, "max": 250}) or {}
            found += doc.get(key, [])
            if not (doc.get("pageDetails") or {}).get("nextPageUrl"):
                break
            page += 1
        return found

    def _device(self, name: str) -> str:
        for d in self._pages("/api/v2/account/devices", "devices"):
            if str(d.get("hostname", "")).lower() == name.lower():
                return str(d["uid"])
        raise StepFailed("not_found", f"Datto RMM manages no device named {name}")

    def _component(self, name: str) -> str:
        for c in self._pages("/api/v2/account/components", "components"):
            if str(c.get("name", "")).lower() == name.lower():
                return str(c["uid"])
        raise StepFailed("not_found", f"no component {name!r} in the Datto RMM account")

    def _quickjob(self, device: str, component: str, job: str, variables: dict[str, str]) -> dict[str, Any]:
        uid = self._device(device)
        body = {
            "jobName": job,
            "jobComponent": {
                "componentUid": self._component(component),
                "variables": [{"name": k, "value": v} for k, v in variables.items()],
            },
        }
        answer = self._call("PUT", f"/api/v2/device/{uid}/quickjob", json=body) or {}
        return {
            "device": device,
            "device_uid": uid,
            "component": component,
            "job_uid": (answer.get("job") or {}).get("uid"),
        }

    def run_script(self, p: Any, *, key: str) -> dict[str, Any]:
        return self._quickjob(p.device, p.script, f"MSP {p.script} ({key[:8]})", {})

    def restart_service(self, p: Any, *, key: str) -> dict[str, Any]:
        return self._quickjob(
            p.device,
            self.config.restart_service_component,
            f"MSP restart {p.service} ({key[:8]})",
            {"service": p.service},
        )

    def reboot_device(self, p: Any, *, key: str) -> dict[str, Any]:
        return self._quickjob(p.device, self.config.reboot_component, f"MSP reboot ({key[:8]})", {})
