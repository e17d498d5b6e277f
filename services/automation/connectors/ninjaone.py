"""NinjaOne RMM through its public API v2 (OAuth client credentials, then
`/v2/devices`, `/v2/device/{id}/scripting/options`, `/v2/device/{id}/script/run`,
`/v2/device/{id}/windows-services`, `/v2/device/{id}/windows-service/{service}/control` and
`/v2/device/{id}/reboot/{mode}`). Devices are named as engineers name them (the system name);
scripts by their name in the tenant's NinjaOne library.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from libs.common.jsontypes import Float
from services.automation.connectors.base import BearerToken, Connector, ConnectorConfig, StepFailed, call_json


class NinjaOneConfig(ConnectorConfig):
    base_url: str  # e.g. https://eu.ninjarmm.com
    client_id: str
    client_secret: str
    run_as: str = "system"
    reboot_mode: str = "NORMAL"
    timeout_s: Float = 15.0


class NinjaOne(Connector):
    kind: ClassVar[str] = "ninjaone"
    config_model: ClassVar[type[ConnectorConfig]] = NinjaOneConfig
    actions: ClassVar[frozenset[str]] = frozenset(
        {"rmm.run_script", "rmm.restart_service", "rmm.reboot_device"}
    )
    config: NinjaOneConfig

    def __init__(self, config: ConnectorConfig, *, secret: bytes) -> None:
        super().__init__(config, secret=secret)
        self.http = httpx.Client(base_url=self.config.base_url.rstrip("/"), timeout=self.config.timeout_s)
        self.token = BearerToken(
            self._grant, peer="NinjaOne", refused="NinjaOne refused the client credentials"
        )

    def close(self) -> None:
        self.http.close()

    def _grant(self) -> httpx.Response:
        c = self.config
        return self.http.post(
            "/ws/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "scope": "monitoring management control",
            },
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return call_json(self.http, self.token, method, path, **kwargs)

    def _device(self, name: str) -> int:
        after: int | None = None
        for _ in range(200):  # at most 200 pages of 1,000 devices
            params: dict[str, Any] = {"pageSize": 1000}
            if after is not None:
                params["after"] = after
            page = self._call("GET", "/v2/devices", params=params) or []
            for d in page:
                if name.lower() in {
                    str(d.get(k, "")).lower() for k in ("systemName", "dnsName", "displayName")
                }:
                    return int(d["id"])
            if len(page) < 1000:
                break
            after = int(page[-1]["id"])
        raise StepFailed("not_found", f"NinjaOne manages no device named {name}")

    def run_script(self, p: Any, *, key: str) -> dict[str, Any]:
        device = self._device(p.device)
        options = self._call("GET", f"/v2/device/{device}/scripting/options") or {}
        scripts = [
            s for s in options.get("scripts", []) if str(s.get("name", "")).lower() == p.script.lower()
        ]
        if not scripts:
            raise StepFailed("not_found", f"no script {p.script!r} in the NinjaOne library for {p.device}")
        self._call(
            "POST",
            f"/v2/device/{device}/script/run",
            json={
                "type": "SCRIPT",
                "id": int(scripts[0]["id"]),
                "parameters": "",
                "runAs": self.config.run_as,
            },
        )
        return {"device": p.device, "device_id": device, "script": p.script, "script_id": scripts[0]["id"]}

    def restart_service(self, p: Any, *, key: str) -> dict[str, Any]:
        device = self._device(p.device)
        services = self._call("GET", f"/v2/device/{device}/windows-services") or []
        match = [
            s
            for s in services
            if p.service.lower() in (str(s.get("name", "")).lower(), str(s.get("displayName", "")).lower())
        ]
        if not match:
            raise StepFailed("not_found", f"{p.device} has no service {p.service!r}")
        name = str(match[0]["name"])
        self._call(
            "POST", f"/v2/device/{device}/windows-service/{quote(name)}/control", json={"action": "RESTART"}
        )
        return {"device": p.device, "device_id": device, "service": name}

    def reboot_device(self, p: Any, *, key: str) -> dict[str, Any]:
        device = self._device(p.device)
        self._call(
            "POST",
            f"/v2/device/{device}/reboot/{self.config.reboot_mode}",
            json={"reason": f"Requested through the MSP platform (step {key[:8]})"},
        )
        return {"device": p.device, "device_id": device, "mode": self.config.reboot_mode}
