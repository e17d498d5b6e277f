"""Process supervision for `msp up`, `msp down`, `msp status` and the tests: each service as
its own `python -m services.<name>` process with its log under `var/logs/` and its pid under
`var/run/`; the embedded defaults are the project's own broker and one SQLite file per service
under `var/db/`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.api import Api, ApiError
from cli.local import REPO_ROOT, SERVICE_PORTS, operator_token, url_of

SERVICES = list(SERVICE_PORTS)


def _say(msg: str) -> None:
    print(msg, flush=True)


def port_of(name: str) -> int:
    return SERVICE_PORTS[name]


def _pid_file(var: Path, name: str) -> Path:
    return var / "run" / f"{name}.pid"


def _alive(var: Path, name: str) -> int | None:
    try:
        pid = int(_pid_file(var, name).read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def start_services(
    var: Path, bootstrap: str, names: list[str] | None = None, extra_env: dict[str, str] | None = None
) -> dict[str, subprocess.Popen[bytes]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    (var / "logs").mkdir(parents=True, exist_ok=True)
    (var / "run").mkdir(parents=True, exist_ok=True)
    for name in names or list(SERVICES):
        if _alive(var, name):
            _say(f"  {name:<11} already running")
            continue
        env = {
            **os.environ,
            **(extra_env or {}),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "MSP_VAR_DIR": str(var),
            "MSP_HTTP_PORT": str(SERVICE_PORTS[name]),
            "MSP_INGEST_URL": url_of("ingest"),
            "MSP_TRIAGE_URL": url_of("triage"),
        }
        log = open(var / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _pid_file(var, name).write_text(str(proc.pid))
        procs[name] = proc
    return procs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_service(name: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m services.<name>` on a free loopback port with `env` on top of ours;
    returns the process and its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"],
        env={**os.environ, **env, "MSP_HTTP_PORT": str(port)},
        cwd=REPO_ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_spawned(procs: dict[str, tuple[subprocess.Popen[bytes], str, Path]], timeout_s: float = 120) -> None:
    """Wait for each spawned service's /readyz; raise with its log if one exits or never gets ready."""

    def target(
        proc: subprocess.Popen[bytes], url: str, log: Path
    ) -> tuple[str, Callable[[], bool], Callable[[], str]]:
        return f"{url}/readyz", lambda: proc.poll() is None, lambda: f"its log:\n{log.read_text()[-3000:]}"

    targets = {name: target(*spawned) for name, spawned in procs.items()}
    not_ready = wait_http_ready(targets, timeout_s)
    if not_ready:
        raise RuntimeError(f"not ready after {timeout_s:.0f} s: {sorted(not_ready)}")


def wait_http_ready(
    targets: dict[str, tuple[str, Callable[[], bool], Callable[[], str]]], timeout_s: float = 120.0
) -> set[str]:
    """Poll each target's readiness URL until it answers 200; returns the names still not ready.

    `targets` maps a name to (readiness URL, "is its process alive?", what to say if it died,
    asked only then):
    a process that exits while starting fails at once instead of after the timeout.
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    pending = set(targets)
    with httpx.Client(timeout=2.0) as client:
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                url, alive, hint = targets[name]
                if not alive():
                    raise RuntimeError(f"{name} exited during start-up; {hint()}")
                try:
                    if client.get(url).status_code == 200:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            if pending:
                time.sleep(0.2)
    return pending


def wait_ready(
    var: Path, procs: dict[str, subprocess.Popen[bytes]], timeout_s: float = 120.0
) -> dict[str, bool]:
    """Poll each service's /readyz; fail fast when one of the processes we started exits."""

    def alive(name: str) -> Callable[[], bool]:
        proc = procs.get(name)
        return lambda: (proc is None or proc.poll() is None) and _alive(var, name) is not None

    def hint(name: str) -> Callable[[], str]:
        return lambda: f"see {var / 'logs' / (name + '.log')}"

    targets = {
        name: (
            f"http://127.0.0.1:{port_of(name)}/readyz",
            alive(name),
            hint(name),
        )
        for name in SERVICES
    }
    not_ready = wait_http_ready(targets, timeout_s)
    return {name: name not in not_ready for name in SERVICES}


def stop_services(var: Path, timeout_s: float = 20.0) -> None:
    for name in SERVICES:
        pid = _alive(var, name)
        if pid is None:
            _pid_file(var, name).unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(var, name):
            time.sleep(0.1)
        if _alive(var, name):
            os.kill(pid, signal.SIGKILL)
            _say(f"  {name:<11} killed (did not stop within {timeout_s:.0f}s)")
        else:
            _say(f"  {name:<11} stopped")
        _pid_file(var, name).unlink(missing_ok=True)


def operator_headers(var: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {operator_token(var)}"}


def service_status(var: Path, tenant: str | None) -> dict[str, Any]:
    """Each service: its pid, URL and readiness; for a tenant, what the platform holds of it:
    events taken in per topic (each topic counted by the service that consumes it), signals,
    packets and audit events."""
    token = operator_token(var)
    services: dict[str, Any] = {}
    topics: dict[str, int] = {}
    held: dict[str, int] = {}
    for name in SERVICES:
        api = Api(url_of(name), token, timeout_s=2.0)
        row: dict[str, Any] = {"pid": _alive(var, name), "url": url_of(name)}
        try:
            row["ready"] = bool(api.call("GET", "/readyz", ok=(200, 503))["ready"])
            if tenant and name in ("triage", "packet"):
                for topic, n in api.call("GET", "/v1/counts", params={"tenant_id": tenant})[
                    "by_topic"
                ].items():
                    topics[topic] = max(topics.get(topic, 0), int(n))
            if tenant and name == "triage":
                found = api.call("GET", "/v1/signals", params={"tenant_id": tenant, "limit": 1000})["signals"]
                held["signals"] = len(found)
                held["alerts_in_signals"] = sum(int(s["count"]) for s in found)
            if tenant and name == "packet":
                held["packets"] = len(api.call("GET", "/v1/packets", params={"tenant_id": tenant})["packets"])
            if tenant and name == "automation":
                held["plans"] = len(api.call("GET", "/v1/plans", params={"tenant_id": tenant})["plans"])
            if tenant and name == "audit":
                held["audit_events"] = int(
                    api.call("GET", "/v1/audit/counts", params={"tenant_id": tenant})["events"]
                )
        except ApiError:
            row["ready"] = False
        services[name] = row
    doc: dict[str, Any] = {"services": services}
    if tenant:
        doc["tenant"] = {"tenant_id": tenant, "consumed_by_topic": dict(sorted(topics.items())), **held}
    return doc


def print_json(doc: Any) -> None:
    _say(json.dumps(doc, indent=2, default=str))


def ensure_topics(bootstrap: str) -> list[str]:
    import asyncio

    from libs.common.settings import PlatformSettings, load_settings
    from libs.common.topics import ensure_topics as _ensure

    return asyncio.run(_ensure(bootstrap, namespace=load_settings(PlatformSettings).topic_namespace))
