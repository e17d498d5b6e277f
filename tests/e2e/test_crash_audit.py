"""A stream of audit events while something fails in the middle of it: the audit service killed
with SIGKILL and restarted, the broker restarted, or PostgreSQL crashed (immediate stop) and
restarted. Every event published on audit.events.v1 is stored exactly once, and the tenant's
hash chain still verifies."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from cli import broker, postgres
from libs.common.db import make_engine
from libs.common.topics import physical
from services.audit.tables import audit_events
from services.ingest import tenants
from tests.conftest import unique
from tests.e2e.test_crash_packet import read_all, ready, until
from tests.e2e.test_crash_triage import PG_PORT, SignalReader, servers_to_fail
from tests.processes import platform_env, spawn_service, start_platform, wait_ready

pytestmark = pytest.mark.e2e
# Ingest audits each accepted request: one alert per request makes one audit event per alert.
ALERTS = int(os.environ.get("MSP_CRASH_AUDIT_ALERTS", "6000"))
SENDERS = 4


@pytest.mark.parametrize("victim", ["audit", "broker", "postgres"])
def test_a_failure_mid_stream_stores_every_audit_event_once_and_the_chain_verifies(
    victim: str, bootstrap: str, pg_url: str, tmp_path: Path
) -> None:
    with servers_to_fail(victim, bootstrap, pg_url, tmp_path, broker_port=19494) as (bootstrap, pg_url, own):
        _stream(victim, bootstrap, pg_url, tmp_path, own)


def _stream(
    victim: str, bootstrap: str, pg_url: str, tmp_path: Path, own: broker.BrokerConfig | None
) -> None:
    env = {
        **platform_env(bootstrap, pg_url, tmp_path, "u" * 40, "acrash"),
        "MSP_RATE_LIMIT_EPS": "100000",
        "MSP_RATE_LIMIT_BURST": "100000",
    }
    run = env["MSP_TOPIC_NAMESPACE"]
    started = start_platform(["ingest", "audit"], env, tmp_path, suffix="-1")
    ingest_url = started["ingest"][1]
    audit_proc = started["audit"][0]
    engine = make_engine(pg_url)
    tenant = unique("trail")
    tenants.add_tenant(engine, tenant, "audit crash")
    key = tenants.issue_key(engine, tenant)
    reader = SignalReader(bootstrap, physical("audit.events.v1", run))
    reader.start()
    later: list[object] = []

    def stored() -> tuple[int, int]:
        with engine.connect() as conn:
            rows, distinct = conn.execute(
                select(func.count(), func.count(func.distinct(audit_events.c.event_id))).where(
                    audit_events.c.tenant_id == tenant
                )
            ).one()
        return int(rows), int(distinct)

    t0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    retried = [0]

    def post(first: int, last: int) -> None:
        with httpx.Client(timeout=30.0, headers={"X-API-Key": key}) as client:
            for n in range(first, last):
                alert = {
                    "fingerprint": f"cpu-{n % 50}",
                    "title": f"CPU above 95% on WS{n % 50:02d}",
                    "device": f"WS{n % 50:02d}",
                    "starts_at": (t0 + timedelta(seconds=n)).isoformat(),
                }
                # Until ingest answers 202: while the broker is down it refuses (503), and the
                # sender tries again, bounded, with the same alert.
                deadline = time.monotonic() + 180
                while True:
                    try:
                        r = client.post(f"{ingest_url}/v1/alerts", json=alert)
                        if r.status_code != 503:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "ingest never came back"
                    retried[0] += 1
                    time.sleep(0.05)
                assert r.status_code == 202, r.text

    try:
        share = ALERTS // SENDERS
        posters = [
            threading.Thread(target=post, args=(i * share, (i + 1) * share), daemon=True)
            for i in range(SENDERS)
        ]
        for poster in posters:
            poster.start()
        deadline = time.monotonic() + 120
        while stored()[0] < ALERTS // 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        killed_at = stored()[0]
        assert killed_at < ALERTS, "audit stored everything before the failure; the test proves nothing"
        url = started["audit"][1]
        if victim == "audit":
            audit_proc.send_signal(signal.SIGKILL)
            audit_proc.wait()
            for poster in posters:
                poster.join(timeout=180)
            log = tmp_path / "audit-2.log"
            proc, url = spawn_service("audit", {**env, "MSP_CONSUMER_GROUP": f"{run}-audit"}, log)
            later.append(proc)
            wait_ready({"audit": (proc, url, log)})
        elif victim == "broker":
            assert own is not None and broker.stop(own), "the broker did not stop"
            until(lambda: retried[0] > 0, 60, "ingest never refused a post while the broker was down")
            broker.start(own)
            for poster in posters:
                poster.join(timeout=300)
        else:
            # Audit reads on while its database is down; its readiness reports it.
            postgres.stop(PG_PORT, mode="immediate")
            until(lambda: not ready(url), 60, "the audit service never noticed the outage")
            postgres.start(PG_PORT, durable=True)
            for poster in posters:
                poster.join(timeout=300)
        # A sentinel after the stream: once its audit event is stored, every one before it is.
        r = httpx.post(
            f"{ingest_url}/v1/alerts",
            json={"fingerprint": "sentinel", "title": "sentinel", "device": "SENTINEL"},
            headers={"X-API-Key": key},
        )
        assert r.status_code == 202, r.text
        sentinel = r.json()["event_ids"][0]

        def sentinel_stored() -> bool:
            records = (
                list(reader.records) if victim != "broker" else read_all(bootstrap, "audit.events.v1", run, 0)
            )
            audit_id = next(
                (
                    rec["event_id"]
                    for rec in records
                    if sentinel in rec["payload"].get("details", {}).get("event_ids", [])
                ),
                None,
            )
            if audit_id is None:
                return False
            with engine.connect() as conn:
                found = conn.execute(
                    select(func.count()).where(audit_events.c.event_id == audit_id)
                ).scalar_one()
            return bool(found)

        deadline = time.monotonic() + 180
        while not sentinel_stored() and time.monotonic() < deadline:
            time.sleep(0.5)
        # The topic read again from its start by a reader of its own (the live one may have lost
        # its broker).
        sent = {
            r["event_id"] for r in read_all(bootstrap, "audit.events.v1", run, 0) if r["tenant_id"] == tenant
        }
        with engine.connect() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    select(audit_events.c.event_id).where(audit_events.c.tenant_id == tenant)
                )
            ]
        rows = len(ids)
        lost = len(sent - set(ids))
        doubled = rows - len(set(ids))
        print(
            f"\ncrash test ({victim} {'SIGKILL' if victim == 'audit' else 'restarted'} after "
            f"{killed_at} events were stored; the sender retried {retried[0]} times): "
            f"requests {SENDERS * share + 1}, "
            f"audit events published {len(sent)}, stored {rows}, lost {lost}, doubled {doubled}"
        )
        assert sentinel_stored(), "the sentinel's audit event never arrived"
        assert len(sent) == SENDERS * share + 1
        assert lost == 0 and doubled == 0
        verify = httpx.get(
            f"{url}/v1/audit/verify",
            params={"tenant_id": tenant},
            headers={"Authorization": f"Bearer {env['MSP_ADMIN_TOKEN']}"},
        ).json()
        assert verify["ok"] and verify["entries"] == rows, verify
    finally:
        reader.stop.set()
        engine.dispose()
        for p in (started["ingest"][0], audit_proc, *later):
            if p.poll() is None:  # type: ignore[attr-defined]
                p.kill()  # type: ignore[attr-defined]
