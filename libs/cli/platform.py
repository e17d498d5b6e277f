"""`msp up`, `msp down`, `msp status`: the whole platform as local processes.

Each service runs as its own `python -m services.<name>` process with its log under
`var/logs/` and its pid under `var/run/`; the embedded defaults are the project's own broker
and one SQLite file per service under `var/db/`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from libs.common.settings import REPO_ROOT, ServiceSettings
from services.audit.settings import AuditSettings
from services.automation.settings import AutomationSettings
from services.ingest.settings import IngestSettings
from services.packet.settings import PacketSettings
from services.triage.settings import TriageSettings

SERVICES: dict[str, type[ServiceSettings]] = {
    "ingest": IngestSettings,
    "triage": TriageSettings,
    "packet": PacketSettings,
    "automation": AutomationSettings,
    "audit": AuditSettings,
}
DEMO_TENANT = "demo"


def _say(msg: str) -> None:
    print(msg, flush=True)


def port_of(name: str) -> int:
    return int(SERVICES[name].model_fields["http_port"].default)


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
    return {"Authorization": f"Bearer {ServiceSettings(var_dir=var).effective_admin_token()}"}


def service_status(var: Path, tenant: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(timeout=2.0, headers=operator_headers(var)) as client:
        for name in SERVICES:
            port = port_of(name)
            row: dict[str, Any] = {"pid": _alive(var, name), "url": f"http://127.0.0.1:{port}"}
            try:
                row["ready"] = client.get(f"{row['url']}/readyz").status_code == 200
                if tenant:
                    if name == "audit":
                        row["audit_events"] = client.get(
                            f"{row['url']}/v1/audit/counts", params={"tenant_id": tenant}
                        ).json()["events"]
                    elif name != "ingest":
                        row["consumed"] = client.get(
                            f"{row['url']}/v1/counts", params={"tenant_id": tenant}
                        ).json()["by_topic"]
            except httpx.HTTPError:
                row["ready"] = False
            out[name] = row
    return out


# --- the demo ------------------------------------------------------------------------------


def demo_key(var: Path) -> str:
    """The demo tenant's sender key, created on first use and kept in var/demo.key (0600)."""
    from libs.common.db import make_engine, migrate
    from services.ingest import tenants

    path = var / "demo.key"
    if path.exists():
        return path.read_text().strip()
    settings = IngestSettings(var_dir=var)
    migrate(settings.effective_database_url, Path(tenants.__file__).parent / "migrations", "ingest")
    engine = make_engine(settings.effective_database_url)
    if not tenants.tenant_exists(engine, DEMO_TENANT):
        tenants.add_tenant(engine, DEMO_TENANT, "Demo client")
    key = tenants.issue_key(engine, DEMO_TENANT, role="integration", label="msp up --demo")
    engine.dispose()
    path.write_text(key)
    path.chmod(0o600)
    return key


def demo_events(now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A small, plausible morning at a client: a file server filling up, a VPN gateway flapping,
    and the tickets users raise about it."""
    t = lambda minutes: (now - timedelta(minutes=minutes)).isoformat()  # noqa: E731
    run = now.strftime("%Y%m%dT%H%M%S")  # each demo run is a new morning, not a retry of the last
    alerts = [
        {
            "fingerprint": "fs01-disk-d",
            "severity": "warning",
            "title": "Disk D: above 90% on FS01",
            "device": "FS01",
            "site": "hq",
            "starts_at": t(40),
        },
        {
            "fingerprint": "fs01-disk-d",
            "severity": "critical",
            "title": "Disk D: above 97% on FS01",
            "device": "FS01",
            "site": "hq",
            "starts_at": t(20),
        },
        {
            "fingerprint": "fs01-backup",
            "severity": "high",
            "title": "Backup job 'Nightly FS01' failed: target full",
            "device": "FS01",
            "site": "hq",
            "starts_at": t(35),
        },
        {
            "fingerprint": "fs01-share-latency",
            "severity": "warning",
            "title": "SMB share latency over 800 ms on FS01",
            "device": "FS01",
            "site": "hq",
            "starts_at": t(18),
        },
        {
            "fingerprint": "vpn-gw1-tunnel",
            "severity": "high",
            "title": "IPsec tunnel to branch down on VPN-GW1",
            "device": "VPN-GW1",
            "site": "branch",
            "starts_at": t(12),
        },
        {
            "fingerprint": "vpn-gw1-tunnel",
            "status": "resolved",
            "severity": "high",
            "title": "IPsec tunnel to branch down on VPN-GW1",
            "device": "VPN-GW1",
            "site": "branch",
            "starts_at": t(12),
            "ends_at": t(9),
        },
        {
            "fingerprint": "vpn-gw1-tunnel",
            "severity": "high",
            "title": "IPsec tunnel to branch down on VPN-GW1",
            "device": "VPN-GW1",
            "site": "branch",
            "starts_at": t(6),
        },
        {
            "fingerprint": "ws-114-av",
            "severity": "low",
            "title": "Antivirus definitions out of date on WS-114",
            "device": "WS-114",
            "site": "hq",
            "starts_at": t(50),
        },
    ]
    tickets = [
        {
            "event_ref": f"demo-{run}-1001-created",
            "kind": "created",
            "occurred_at": t(15),
            "ticket": {
                "ticket_id": f"1001-{run}",
                "title": "Cannot save files to the S: drive",
                "description": "Since this morning saving to S: says the disk is full.",
                "requester": "maria.lopez@client.example",
                "site": "hq",
                "devices": ["FS01"],
                "priority": "high",
                "status": "New",
                "tier": "L1",
            },
        },
        {
            "event_ref": f"demo-{run}-1001-note",
            "kind": "note_added",
            "occurred_at": t(10),
            "ticket": {
                "ticket_id": f"1001-{run}",
                "title": "Cannot save files to the S: drive",
                "tier": "L1",
            },
            "note": {
                "note_id": "n-1",
                "text": "Cleared temp folders on FS01, freed 2 GB; still 96% full.",
                "internal": True,
                "author": "l1.sam",
            },
        },
        {
            "event_ref": f"demo-{run}-1001-escalated",
            "kind": "escalated",
            "occurred_at": t(5),
            "ticket": {
                "ticket_id": f"1001-{run}",
                "title": "Cannot save files to the S: drive",
                "tier": "L2",
            },
            "escalation": {"from_tier": "L1", "to_tier": "L2"},
        },
    ]
    return alerts, tickets


DEMO_RUNBOOK = """# File server disk full

## Meaning
A data volume of a file server is nearly full: users cannot save to the shares on it and the
nightly backup to it fails.

## Diagnosis
- Check which folders grew in the last week with a disk usage report.
- Check whether shadow copies take more than 10% of the volume.
- Confirm the last backup of the volume completed.

## Mitigation
Move old project folders to the archive share; extend the volume if the datastore allows.
"""


def run_demo(var: Path) -> dict[str, Any]:
    key = demo_key(var)
    alerts, tickets = demo_events(datetime.now(UTC))
    base = f"http://127.0.0.1:{port_of('ingest')}"
    operator = httpx.Client(timeout=2.0, headers=operator_headers(var))
    counts_url = f"http://127.0.0.1:{port_of('audit')}/v1/audit/counts"

    def audited() -> int:
        return int(operator.get(counts_url, params={"tenant_id": DEMO_TENANT}).json()["events"])

    before = audited()  # an earlier demo run's trail stays; count what this one adds
    started = time.time() - 3600  # the demo's alerts start up to an hour back
    signals_url = f"http://127.0.0.1:{port_of('triage')}/v1/signals"

    def signals() -> list[dict[str, Any]]:
        r = operator.get(signals_url, params={"tenant_id": DEMO_TENANT})
        return list(r.json()["signals"]) if r.status_code == 200 else []

    # The demo client's own runbook (embedded once; unchanged on later runs).
    kb = operator.put(
        f"http://127.0.0.1:{port_of('packet')}/v1/kb/runbooks",
        json={"tenant_id": DEMO_TENANT, "path": "file-server-disk-full.md", "markdown": DEMO_RUNBOOK},
        timeout=120.0,
    )
    kb.raise_for_status()
    accepted = 0
    with httpx.Client(timeout=10.0, headers={"X-API-Key": key}) as client:
        for body in alerts:
            r = client.post(f"{base}/v1/alerts", json={"source_system": "demo-rmm", **body})
            r.raise_for_status()
            accepted += len(r.json()["event_ids"])
        # Users call a little after the monitoring fired, when triage knows the signals: wait
        # for the signal of this run's latest alert, then give the ticket side a moment.
        latest = max(datetime.fromisoformat(a["starts_at"]).timestamp() for a in alerts)
        wait_until = time.monotonic() + 30
        while time.monotonic() < wait_until and not any(s["last_seen"] >= latest for s in signals()):
            time.sleep(0.5)
        time.sleep(2.0)
        for body in tickets:
            r = client.post(f"{base}/v1/tickets/events", json={"source_system": "demo-psa", **body})
            r.raise_for_status()
            accepted += len(r.json()["event_ids"])
    # Triage groups the alerts into signals (the demo's alerts are bursts: fewer signals than
    # alerts) and audits each signal it opens; ingest audits each request (one event each
    # here); triage and packet audit each ticket event they take in.
    triage_url = f"http://127.0.0.1:{port_of('triage')}/v1/tickets/{{}}/triage"
    ticket_ids = sorted({t["ticket"]["ticket_id"] for t in tickets})

    def triaged() -> list[dict[str, Any]]:
        out = []
        for tid in ticket_ids:
            r = operator.get(triage_url.format(tid), params={"tenant_id": DEMO_TENANT})
            if r.status_code == 200:
                out.append(r.json()["result"]["payload"])
        return out

    packet_url = f"http://127.0.0.1:{port_of('packet')}/v1/packets"

    def packets() -> list[dict[str, Any]]:
        out = []
        for tid in ticket_ids:
            r = operator.get(packet_url, params={"tenant_id": DEMO_TENANT, "ticket_id": tid})
            if r.status_code == 200:
                out.append(r.json())
        return out

    # Each ticket is classified once (and audited so); the escalated one gets a packet.
    deadline = time.monotonic() + 60
    added, grouped, results, built = 0, [], [], []
    expected = accepted + 2 * len(tickets) + len(ticket_ids)
    try:
        while time.monotonic() < deadline:
            grouped = [s for s in signals() if s["last_seen"] >= started]
            results = triaged()
            built = packets()
            added = audited() - before
            expected = accepted + 2 * len(tickets) + len(ticket_ids) + len(grouped)
            if (
                sum(s["count"] for s in grouped) >= len(alerts)
                and added >= expected
                and len(results) == len(ticket_ids)
                and built
            ):
                break
            time.sleep(0.5)
    finally:
        operator.close()
    return {
        "tenant": DEMO_TENANT,
        "posted": len(alerts) + len(tickets),
        "accepted": accepted,
        "alerts": len(alerts),
        "signals": [
            {
                "title": s["title"],
                "alerts": s["count"],
                "devices": sorted(s["devices"]),
                "severity": s["severity"],
            }
            for s in grouped
        ],
        "tickets": [
            {
                "ticket_id": r["ticket_id"],
                "category": r["category"]["label"],
                "category_method": r["category"]["method"],
                "intent": r["intent"]["label"],
                "priority": r["priority"]["label"],
                "priority_because": (r["priority"]["rationale"] or {}).get("text"),
                "open_signals": [s["title"] for s in r["context"]["open_signals"]],
                "rollout_mode": r["rollout_mode"],
                "needs_human": r["needs_human"],
            }
            for r in results
        ],
        "packets": [
            {
                "packet_id": b["packet_id"],
                "version": b["version"],
                "page": f"{packet_url}/{b['packet_id']}/page?tenant_id={DEMO_TENANT}",
                "summary": [c["text"] for c in b["packet"]["summary"]],
                "related_alerts": len(b["packet"]["related_alerts"]),
                "runbook": [c["text"] for c in b["packet"]["runbook"]],
                "still_unknown": [u["text"] for u in b["packet"]["still_unknown"]],
            }
            for b in built
        ],
        "audit_events_added": added,
        "audit_events_expected_at_least": expected,
    }


def print_json(doc: Any) -> None:
    _say(json.dumps(doc, indent=2, default=str))


def ensure_topics(bootstrap: str) -> list[str]:
    from libs.common.settings import PlatformSettings, load_settings
    from libs.common.topics import ensure_topics as _ensure

    return asyncio.run(_ensure(bootstrap, namespace=load_settings(PlatformSettings).topic_namespace))
