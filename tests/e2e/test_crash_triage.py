"""Triage, or ingest, killed with SIGKILL in the middle of an alert stream and restarted: every
alert that ingest accepted ends up in exactly one signal, once, and no revision number or event
id ever names two different contents (a reader that deduplicates on either, as the README says,
loses nothing). When ingest dies, the sender retries what it was not told was accepted, as any
sender does; ingest's event ids make the retry the same events."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import create_engine, text

from cli import broker, postgres
from libs.common.db import make_engine
from libs.common.topics import physical
from services.ingest import tenants
from tests.conftest import unique
from tests.processes import platform_env, spawn_service, start_platform, wait_ready

pytestmark = pytest.mark.e2e
ALERTS = int(os.environ.get("MSP_CRASH_ALERTS", "20000"))
DEVICES = 20
BATCH = 250


class SignalReader(threading.Thread):
    """Every record of the signal topic, in a thread of its own."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[dict[str, Any]] = []
        self.added = 0  # alert ids announced so far, duplicates included (a cheap progress figure)
        self.stop = threading.Event()

    def run(self) -> None:
        async def read() -> None:
            consumer = AIOKafkaConsumer(
                self.topic,
                bootstrap_servers=self.bootstrap,
                group_id=unique("crash-reader"),
                auto_offset_reset="earliest",
            )
            await consumer.start()
            try:
                while not self.stop.is_set():
                    for records in (await consumer.getmany(timeout_ms=50)).values():
                        docs = [json.loads(r.value) for r in records]
                        self.added += sum(len(d["payload"].get("added_alert_ids", [])) for d in docs)
                        self.records.extend(docs)
            finally:
                await consumer.stop()

        asyncio.run(read())

    def as_deduplicated(self) -> tuple[dict[str, set[str]], int, int]:
        """What a reader that keeps the first record per (signal, revision) and per event id
        learns: each signal's alerts. Also how many revision numbers and event ids were reused
        for other content."""
        by_revision: dict[tuple[str, int], str] = {}
        by_event: dict[str, str] = {}
        reused_revisions = reused_ids = 0
        alerts: dict[str, set[str]] = defaultdict(set)
        for r in list(self.records):
            p = r["payload"]
            content = json.dumps({k: v for k, v in p.items()}, sort_keys=True)
            key = (p["signal_id"], p["revision"])
            if key in by_revision:
                reused_revisions += by_revision[key] != content
                continue
            if r["event_id"] in by_event:
                reused_ids += by_event[r["event_id"]] != content
                continue
            by_revision[key] = by_event[r["event_id"]] = content
            alerts[p["signal_id"]].update(p["added_alert_ids"])
        return alerts, reused_revisions, reused_ids

    def first_records(self) -> list[dict[str, Any]]:
        """The records a reader deduplicating on (signal, revision) and event id keeps."""
        kept, keys, ids = [], set(), set()
        for r in list(self.records):
            key = (r["payload"]["signal_id"], r["payload"]["revision"])
            if key in keys or r["event_id"] in ids:
                continue
            keys.add(key)
            ids.add(r["event_id"])
            kept.append(r)
        return kept


PG_PORT = 55532  # a PostgreSQL of its own for the restart test


@pytest.mark.parametrize("victim", ["triage", "ingest", "broker", "postgres"])
def test_a_service_killed_mid_stream_loses_and_doubles_no_alert(
    victim: str, bootstrap: str, pg_url: str, tmp_path: Path
) -> None:
    with servers_to_fail(victim, bootstrap, pg_url, tmp_path, broker_port=19492) as (bootstrap, pg_url, own):
        _stream(victim, bootstrap, pg_url, tmp_path, own)


@contextmanager
def servers_to_fail(
    victim: str, bootstrap: str, pg_url: str, tmp_path: Path, *, broker_port: int
) -> Iterator[tuple[str, str, broker.BrokerConfig | None]]:
    """(bootstrap, database URL, own broker) for a test that fails `victim`: a broker or a
    PostgreSQL server of the test's own when it is the one to restart (the shared ones must
    stay up for the other tests), stopped afterwards."""
    own: broker.BrokerConfig | None = None
    if victim == "broker":
        own = broker.BrokerConfig(port=broker_port, var_dir=tmp_path / "kafka", heap="512m")
        bootstrap = broker.start(own)
    if victim == "postgres":  # durable, as a production server: a crash loses nothing it acknowledged
        admin = postgres.start(PG_PORT, durable=True)
        with create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text('DROP DATABASE IF EXISTS "restart"'))
            conn.execute(text('CREATE DATABASE "restart"'))
        pg_url = admin.rsplit("/", 1)[0] + "/restart"
    try:
        yield bootstrap, pg_url, own
    finally:
        if own is not None:
            broker.stop(own)
        if victim == "postgres":
            postgres.stop(PG_PORT)


def _stream(victim: str, bootstrap: str, pg_url: str, tmp_path: Path, own: Any) -> None:
    env = {
        **platform_env(bootstrap, pg_url, tmp_path, "k" * 40, "crash"),
        "MSP_EMBEDDINGS_ENABLED": "false",
        "MSP_TICKETS_ENABLED": "false",
        "MSP_RATE_LIMIT_EPS": "100000",
        "MSP_RATE_LIMIT_BURST": "100000",
    }
    run = env["MSP_TOPIC_NAMESPACE"]
    started = start_platform(["ingest", "triage"], env, tmp_path, suffix="-1")
    ingest_proc, ingest_url, _ = started["ingest"]
    triage_proc = started["triage"][0]
    engine = make_engine(pg_url)
    tenant = unique("storm")
    tenants.add_tenant(engine, tenant, "crash test")
    key = tenants.issue_key(engine, tenant)
    engine.dispose()
    reader = SignalReader(bootstrap, physical("signals.clustered.v1", run))
    reader.start()
    t0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    accepted: set[str] = set()
    started_later: list[Any] = []
    ingest_at = [ingest_url]  # where the sender posts: a restarted ingest listens elsewhere
    retried = [0]

    def send(client: httpx.Client, alerts: list[dict[str, Any]]) -> httpx.Response:
        """Post until ingest answers 202: while it is down (refused, cut off, not ready) the
        sender tries again, bounded, with the same alerts."""
        deadline = time.monotonic() + 120
        while True:
            try:
                r = client.post(f"{ingest_at[0]}/v1/alerts/batch", json={"alerts": alerts})
                if r.status_code != 503:
                    return r
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ingest never came back"
            retried[0] += 1
            time.sleep(0.05)

    def post(first: int, last: int) -> None:
        with httpx.Client(timeout=30.0, headers={"X-API-Key": key}) as client:
            for start in range(first, last, BATCH):
                alerts = [
                    {
                        "fingerprint": f"disk-{n % DEVICES}",
                        "title": f"Disk D: above 90% on FS{n % DEVICES:02d}",
                        "device": f"FS{n % DEVICES:02d}",
                        "site": f"site-{n % DEVICES}",
                        "severity": "warning",
                        "starts_at": (t0 + timedelta(seconds=n)).isoformat(),
                    }
                    for n in range(start, min(last, start + BATCH))
                ]
                r = send(client, alerts)
                assert r.status_code == 202, r.text
                accepted.update(r.json()["event_ids"])

    def seen() -> int:
        return sum(len(a) for a in reader.as_deduplicated()[0].values())

    try:
        # The whole stream is posted at full speed from a thread; the victim is killed a quarter
        # of the way in (triage: once it has published revisions for a quarter of the alerts;
        # ingest: once it has accepted a quarter), in the middle of its work.
        poster = threading.Thread(target=post, args=(0, ALERTS), daemon=True)
        poster.start()
        deadline = time.monotonic() + 60
        if victim == "triage":
            while reader.added < ALERTS // 4 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert reader.added < ALERTS, "triage finished before it could be killed; the test proves nothing"
            triage_proc.send_signal(signal.SIGKILL)
            triage_proc.wait()
            killed_at = seen()
            poster.join(timeout=120)  # ingest goes on accepting while triage is down
            log = tmp_path / "triage-2.log"
            proc, url = spawn_service("triage", {**env, "MSP_CONSUMER_GROUP": f"{run}-triage"}, log)
            started_later.append(proc)
            wait_ready({"triage": (proc, url, log)})
        elif victim == "broker":
            # The broker restarts under load: ingest answers 503 meanwhile (the sender retries),
            # triage's consumer and publisher reconnect.
            while len(accepted) < ALERTS // 4 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert broker.stop(own), "the broker did not stop"
            killed_at = len(accepted)
            assert killed_at < ALERTS, (
                "ingest took everything before the broker stopped; the test proves nothing"
            )
            down_until = time.monotonic() + 60
            while retried[0] == 0 and time.monotonic() < down_until:  # until ingest has refused
                time.sleep(0.05)
            assert retried[0] > 0, "ingest never refused a post while the broker was down"
            broker.start(own)
            poster.join(timeout=240)
        elif victim == "postgres":
            # The database server crashes (immediate stop) under load and comes back: ingest
            # refuses while it cannot check keys (the sender retries); triage's checkpoints
            # wait for it and its consumer commits nothing it has not stored.
            while len(accepted) < ALERTS // 4 and time.monotonic() < deadline:
                time.sleep(0.001)
            postgres.stop(PG_PORT, mode="immediate")
            killed_at = len(accepted)
            assert killed_at < ALERTS, "ingest took everything before the database stopped"
            down_until = time.monotonic() + 60
            while retried[0] == 0 and time.monotonic() < down_until:
                time.sleep(0.05)
            assert retried[0] > 0, "ingest never refused a post while the database was down"
            postgres.start(PG_PORT, durable=True)
            poster.join(timeout=240)
        else:
            while len(accepted) < ALERTS // 4 and time.monotonic() < deadline:
                time.sleep(0.001)
            ingest_proc.send_signal(signal.SIGKILL)
            ingest_proc.wait()
            killed_at = len(accepted)
            assert killed_at < ALERTS, (
                "ingest took everything before it could be killed; the test proves nothing"
            )
            log = tmp_path / "ingest-2.log"
            proc, url = spawn_service("ingest", env, log)
            started_later.append(proc)
            wait_ready({"ingest": (proc, url, log)})
            ingest_at[0] = ingest_url = url
            poster.join(timeout=180)
        deadline = time.monotonic() + 120
        while seen() < ALERTS and time.monotonic() < deadline:
            time.sleep(0.2)
        # A sentinel after the stream: once its signal is read, every revision before it is too.
        post_sentinel = {
            "fingerprint": "sentinel",
            "title": "sentinel",
            "device": "SENTINEL",
            "starts_at": t0.isoformat(),
        }
        r = httpx.post(f"{ingest_url}/v1/alerts", json=post_sentinel, headers={"X-API-Key": key})
        sentinel = r.json()["event_ids"][0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            sentinel in rec["payload"]["added_alert_ids"] for rec in list(reader.records)
        ):
            time.sleep(0.2)
        (tmp_path / "signal-records.json").write_text(json.dumps(reader.records))
        alerts, reused_revisions, reused_ids = reader.as_deduplicated()
        alerts = {sid: ids - {sentinel} for sid, ids in alerts.items() if ids - {sentinel}}
        # After a triage crash, alerts that joined after its last checkpoint are announced again
        # in a later revision of the same signal (membership and `count` stay exact): counted
        # apart, not as doubled.
        announced = sum(
            len([a for a in r["payload"]["added_alert_ids"] if a != sentinel]) for r in reader.first_records()
        )
        holders: dict[str, int] = defaultdict(int)
        for ids in alerts.values():
            for a in ids:
                holders[a] += 1
        lost = len(accepted - set(holders))
        doubled = sum(1 for n in holders.values() if n > 1)
        reannounced = announced - len(holders)
        counts = {r["payload"]["signal_id"]: r["payload"]["count"] for r in reader.first_records()}
        after = "alerts were in published signals" if victim == "triage" else "alerts were accepted"
        how = {"broker": "restarted", "postgres": "crashed and restarted"}.get(victim, "SIGKILL")
        print(
            f"\ncrash test ({victim} {how} after {killed_at} {after}; the sender retried "
            f"{retried[0]} times): sent {ALERTS}, accepted {len(accepted)}, "
            f"in signals {len(holders)}, lost {lost}, doubled {doubled}, "
            f"revision numbers reused {reused_revisions}, event ids reused {reused_ids}, "
            f"re-announced in a later revision {reannounced}"
        )
        if victim != "triage":  # an outage of a dependency is waited out, not a reason to exit
            assert triage_proc.poll() is None, f"triage exited during the {victim} outage"
        assert len(accepted) == ALERTS
        assert lost == 0 and doubled == 0
        assert reused_revisions == 0 and reused_ids == 0
        assert len(alerts) == DEVICES
        assert sum(counts.values()) - 1 == ALERTS, "each signal's count is exact (the sentinel's is 1)"
    finally:
        reader.stop.set()
        for p in (ingest_proc, triage_proc, *started_later):
            if p.poll() is None:
                p.kill()
