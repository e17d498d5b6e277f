"""Run platform services and peers as real processes for integration and end-to-end tests."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from cli.processes import free_port, spawn_service, wait_spawned

__all__ = ["free_port", "platform_env", "spawn_service", "start_platform", "stop_platform", "wait_ready"]


def wait_ready(procs: dict[str, tuple[subprocess.Popen[bytes], str, Path]], timeout_s: float = 90) -> None:
    """Poll each service's /readyz; fail with its log if one exits or never becomes ready."""
    wait_spawned(procs, timeout_s)


Started = dict[str, tuple[subprocess.Popen[bytes], str, Path]]


def platform_env(bootstrap: str, pg_url: str, var: Path, token: str, prefix: str) -> dict[str, str]:
    """The environment of a test's own platform: a topic namespace of its own (created here),
    the test database, an operator token; the ingest database migrated (tests add tenants)."""
    import asyncio

    from libs.common.db import migrate
    from libs.common.settings import REPO_ROOT
    from libs.common.topics import ensure_topics
    from tests.conftest import unique

    migrate(pg_url, REPO_ROOT / "services" / "ingest" / "migrations", "ingest")
    namespace = unique(prefix).replace("-", "")
    asyncio.run(ensure_topics(bootstrap, namespace=namespace))
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MSP_TOPIC_NAMESPACE": namespace,
        "MSP_ADMIN_TOKEN": token,
        "MSP_DATABASE_URL": pg_url,
        "MSP_VAR_DIR": str(var),
    }


def start_platform(names: Sequence[str], env: dict[str, str], var: Path, *, suffix: str = "") -> Started:
    """Start the named services (ingest first: the others check tenant keys with it), each in
    its own consumer group of the namespace, and wait until all are ready."""
    started: Started = {}
    ordered = sorted(names, key=lambda n: n != "ingest")
    for name in ordered:
        log = var / f"{name}{suffix}.log"
        own = {
            **env,
            "MSP_CONSUMER_GROUP": f"{env.get('MSP_TOPIC_NAMESPACE', 'test')}-{name}",
            **({"MSP_INGEST_URL": started["ingest"][1]} if "ingest" in started else {}),
        }
        proc, url = spawn_service(name, own, log)
        started[name] = (proc, url, log)
    try:
        wait_ready(started)
    except BaseException:
        stop_platform(started)
        raise
    return started


def stop_platform(started: Started) -> None:
    for proc, _, _ in started.values():
        if proc.poll() is None:
            proc.kill()
