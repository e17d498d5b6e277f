"""Run platform services and peers as real processes for integration and end-to-end tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli.processes import free_port, spawn_service, wait_spawned

__all__ = ["free_port", "spawn_service", "wait_ready"]


def wait_ready(procs: dict[str, tuple[subprocess.Popen[bytes], str, Path]], timeout_s: float = 90) -> None:
    """Poll each service's /readyz; fail with its log if one exits or never becomes ready."""
    wait_spawned(procs, timeout_s)
