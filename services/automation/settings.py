"""Settings of the automation service (environment variables `MSP_...`)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

from pydantic import Field

from libs.common.settings import ServiceSettings, dev_secret


class AutomationSettings(ServiceSettings):
    service_name: str = "automation"
    http_port: int = 8084
    # "all": the HTTP API (plans, approvals, runs) and the executor in one process; "api" or
    # "executor" to run and scale them apart (the executor is its own consumer group).
    automation_role: Literal["all", "api", "executor"] = "all"
    # How often tenants whose resolved tickets changed are mined again for candidates and
    # readiness (GET /v1/candidates?refresh=true mines one tenant at once).
    mining_interval_s: float = Field(default=600.0, ge=5.0, le=86400.0)

    def step_secret(self) -> bytes:
        """The key temporary passwords are derived from (with each step's idempotency key):
        from MSP_SECRETS_KEY, or the local secrets key."""
        base = (
            self.secrets_key.get_secret_value()
            if self.secrets_key
            else dev_secret(self.var_dir, "secrets-key", make=_new_key)
        )
        return hmac.new(base.encode(), b"msp automation step secrets v1", hashlib.sha256).digest()


def _new_key() -> str:
    from libs.common.crypto import new_key

    return new_key()
