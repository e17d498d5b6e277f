"""Run platform services and peers as real processes for integration and end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from libs.cli.platform import wait_http_ready
from libs.common.settings import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_service(name: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m services.<name>` on a free port; returns the process and its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"],
        env={**os.environ, **env, "MSP_HTTP_PORT": str(port)},
        cwd=REPO_ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(procs: dict[str, tuple[subprocess.Popen[bytes], str, Path]], timeout_s: float = 90) -> None:
    """Poll each service's /readyz; fail with its log if one exits or never becomes ready."""
    targets = {
        name: (
            f"{url}/readyz",
            lambda p=proc: p.poll() is None,  # type: ignore[misc]
            lambda lg=log: f"its log:\n{lg.read_text()[-3000:]}",  # type: ignore[misc]
        )
        for name, (proc, url, log) in procs.items()
    }
    not_ready = wait_http_ready(targets, timeout_s)
    assert not not_ready, f"not ready: {not_ready}"
