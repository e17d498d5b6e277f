"""Run platform services and peers as real processes for integration and end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

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
    pending = set(procs)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            proc, url, log = procs[name]
            assert proc.poll() is None, f"{name} exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    pending.discard(name)
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    assert not pending, f"not ready: {pending}"
