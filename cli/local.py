"""Where a local platform lives and how to reach it, without importing the services: the
state folder, the operators' token, and the port each service runs on under `msp up`.

Kept free of heavy imports: every `msp` command starts here and should answer at once.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Where `msp up` runs each service (it sets MSP_HTTP_PORT for each process).
SERVICE_PORTS: dict[str, int] = {
    "ingest": 8081,
    "triage": 8082,
    "packet": 8083,
    "automation": 8084,
    "audit": 8085,
}


def var_dir(explicit: str | None = None) -> Path:
    """The state folder: --var-dir, else MSP_VAR_DIR, else ./var of the checkout."""
    return Path(explicit or os.environ.get("MSP_VAR_DIR") or REPO_ROOT / "var")


def url_of(name: str) -> str:
    return f"http://127.0.0.1:{SERVICE_PORTS[name]}"


def operator_token(var: Path) -> str:
    """MSP_ADMIN_TOKEN, else the local token the services share (var/secrets/admin-token)."""
    if token := os.environ.get("MSP_ADMIN_TOKEN"):
        return token
    path = var / "secrets" / "admin-token"
    if path.exists():
        return path.read_text().strip()
    from libs.common.settings import dev_secret  # creates it, as the services would

    return dev_secret(var, "admin-token")
