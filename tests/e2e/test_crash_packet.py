"""A stream of escalations through ingest and the packet service while something fails in the
middle of it: the packet service killed with SIGKILL and restarted, the broker restarted, or
PostgreSQL crashed (immediate stop) and restarted. Every escalation gets its packet, every
version exactly one packets.escalation.v1 event (the same bytes under one id, however often the
outbox relays it) and exactly one note in the tenant's PSA."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text

from cli import broker, postgres
from libs.common.db import make_engine
from libs.common.topics import physical, spec_for
from services.ingest import tenants
from tests.conftest import unique
from tests.e2e.test_crash_triage import PG_PORT, SignalReader, servers_to_fail
from tests.fakes.psa_sink import psa_sink
from tests.processes import platform_env, spawn_service, start_platform, stop_platform, wait_ready

pytestmark = pytest.mark.e2e
ESCALATIONS = 200


@pytest.mark.parametrize("victim", ["packet", "broker", "postgres"])
def test_a_failure_mid_stream_leaves_one_event_and_one_note_per_version(
    victim: str, bootstrap: str, pg_url: str, tmp_path: Path
) -> None:
    with servers_to_fail(victim, bootstrap, pg_url, tmp_path, broker_port=19493) as (bootstrap, pg_url, own):
        _stream(victim, bootstrap, pg_url, tmp_path, own)


def _stream(
    victim: str, bootstrap: str, pg_url: str, tmp_path: Path, own: broker.BrokerConfig | None
) -> None:
    env = {
        **platform_env(bootstrap, pg_url, tmp_path, "p" * 40, "pcrash"),
        "MSP_PSA_RETRY_BASE_S": "0.2",
        # Where engineers reach the service stays the same across the restart (the packets link
        # to it; a new address would rightly make new versions).
        "MSP_PAGE_BASE_URL": "http://packet.msp.test",
        "MSP_RATE_LIMIT_EPS": "100000",
        "MSP_RATE_LIMIT_BURST": "100000",
    }
    run = env["MSP_TOPIC_NAMESPACE"]
    started = start_platform(["ingest", "packet"], env, tmp_path, suffix="-1")
    ingest_url, packet_url = started["ingest"][1], started["packet"][1]
    engine = make_engine(pg_url)
    tenant = unique("esc")
    tenants.add_tenant(engine, tenant, "packet crash")
    key = tenants.issue_key(engine, tenant)
    engine.dispose()
    reader = SignalReader(bootstrap, physical("packets.escalation.v1", run))
    reader.start()
    auth = {"Authorization": f"Bearer {env['MSP_ADMIN_TOKEN']}"}
    with psa_sink() as (sink, sink_url):
        r = httpx.put(
            f"{packet_url}/v1/psa",
            json={
                "tenant_id": tenant,
                "kind": "halopsa",
                "base_url": sink_url,
                "credentials": {"token": "t"},
            },
            headers=auth,
        )
        assert r.status_code == 200, r.text
        restarted = None
        try:
            retried = [0]

            def post() -> None:
                # Until ingest answers 202: while the broker or the database is down it refuses
                # (503) or cannot be reached, and the sender tries again, bounded, with the same
                # events (their refs make a retry of an accepted post change nothing).
                with httpx.Client(timeout=30.0, headers={"X-API-Key": key}) as client:
                    for n in range(ESCALATIONS):
                        snap = {
                            "ticket_id": str(9000 + n),
                            "title": f"Printer {n} jammed",
                            "devices": [f"PR{n}"],
                        }
                        events = [
                            {"kind": "created", "event_ref": f"{n}-c", "ticket": snap},
                            {
                                "kind": "escalated",
                                "event_ref": f"{n}-e",
                                "ticket": snap,
                                "escalation": {"from_tier": "L1", "to_tier": "L2"},
                            },
                        ]
                        deadline = time.monotonic() + 180
                        while True:
                            try:
                                r = client.post(
                                    f"{ingest_url}/v1/tickets/events/batch", json={"events": events}
                                )
                                if r.status_code != 503:
                                    break
                            except httpx.TransportError:
                                pass
                            assert time.monotonic() < deadline, "ingest never came back"
                            retried[0] += 1
                            time.sleep(0.05)
                        assert r.status_code == 202, r.text

            poster = threading.Thread(target=post, daemon=True)
            poster.start()
            deadline = time.monotonic() + 60
            while len(sink.notes) < ESCALATIONS // 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(sink.notes) < ESCALATIONS, "the packet service finished before it could be killed"
            killed_at = len(sink.notes)
            url = packet_url
            if victim == "packet":
                proc = started["packet"][0]
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                poster.join(timeout=120)
                log = tmp_path / "packet-2.log"
                consumer = {"MSP_CONSUMER_GROUP": f"{run}-packet", "MSP_INGEST_URL": ingest_url}
                restarted, url = spawn_service("packet", {**env, **consumer}, log)
                wait_ready({"packet": (restarted, url, log)})
            elif victim == "broker":
                assert own is not None and broker.stop(own), "the broker did not stop"
                until(lambda: retried[0] > 0, 60, "ingest never refused a post while the broker was down")
                broker.start(own)
                poster.join(timeout=300)
            else:
                postgres.stop(PG_PORT, mode="immediate")
                # The packet service sees it: its readiness reports the database unreachable.
                until(lambda: not ready(packet_url), 60, "the packet service never noticed the outage")
                postgres.start(PG_PORT, durable=True)
                poster.join(timeout=300)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and len({_ticket(n) for n in sink.notes}) < ESCALATIONS:
                time.sleep(0.2)
            # Marker: every version recorded as posted means every note is in, and nothing is pending.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                listed = httpx.get(
                    f"{url}/v1/packets", params={"tenant_id": tenant, "limit": 200}, headers=auth
                )
                if len(listed.json()["packets"]) == ESCALATIONS:
                    break
                time.sleep(0.2)
            # Marker: the outbox empty means every packet event is on the topic (a relay whose
            # Kafka client a broker restart left stuck renews it, within about 40 s).
            db = make_engine(pg_url)
            deadline = time.monotonic() + 120
            try:
                while time.monotonic() < deadline:
                    with db.connect() as conn:
                        waiting = conn.execute(
                            text("SELECT count(*) FROM packet_outbox WHERE published_at IS NULL")
                        ).scalar_one()
                    if waiting == 0:
                        break
                    time.sleep(0.2)
            finally:
                db.dispose()
        finally:
            reader.stop.set()
            stop_platform(started)
            if restarted is not None and restarted.poll() is None:
                restarted.kill()
    notes_per_version: dict[tuple[str, str], int] = defaultdict(int)
    for n in sink.notes:
        body = n["body"][0]
        marker = body["note_html"].rsplit("msp-packet:", 1)[1].split("<", 1)[0]
        notes_per_version[(str(body["ticket_id"]), marker)] += 1
    # The topic read again from its start by a reader of its own: the one that ran during the
    # stream may have lost its connection with the broker it was reading from.
    records = read_all(bootstrap, "packets.escalation.v1", run, len(reader.records))
    contents: dict[str, set[str]] = defaultdict(set)
    versions: set[tuple[str, int]] = set()
    for rec in records:
        contents[rec["event_id"]].add(json.dumps(rec, sort_keys=True))
        versions.add((rec["payload"]["ticket_id"], rec["payload"]["version"]))
    tickets = {t for t, _ in notes_per_version}
    doubled_notes = sum(1 for c in notes_per_version.values() if c > 1)
    reused_ids = sum(1 for c in contents.values() if len(c) > 1)
    how = {"packet": "packet SIGKILL", "broker": "broker restarted", "postgres": "PostgreSQL crashed"}[victim]
    print(
        f"\ncrash test ({how} after {killed_at} notes; the sender retried {retried[0]} times): "
        f"escalations {ESCALATIONS}, "
        f"tickets with a note {len(tickets)}, notes {len(sink.notes)}, versions with a note "
        f"{len(notes_per_version)}, doubled notes {doubled_notes}, packet events {len(contents)} "
        f"for {len(versions)} versions, event ids with two contents {reused_ids}"
    )
    assert len(tickets) == ESCALATIONS, "lost: escalations without a note"
    assert len(versions) == len(notes_per_version) == ESCALATIONS, "one version each: nothing rebuilt twice"
    assert doubled_notes == 0 and reused_ids == 0
    assert {(t, f"v{v}") for t, v in versions} <= {(t, m.rsplit(":", 1)[1]) for t, m in notes_per_version}


def _ticket(note: dict) -> str:  # type: ignore[type-arg]
    return str(note["body"][0]["ticket_id"])


def until(ok: Callable[[], bool], seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not ok() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ok(), failure


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def read_all(bootstrap: str, logical: str, namespace: str, at_least: int) -> list[dict[str, Any]]:
    """Every record of the topic, read from its beginning until the end offsets are reached."""

    async def read() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            topic = physical(logical, namespace)
            partitions = [TopicPartition(topic, p) for p in range(spec_for(logical).partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            out: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                positions = [await consumer.position(tp) for tp in partitions]
                if all(pos >= end[tp] for pos, tp in zip(positions, partitions, strict=True)):
                    break
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    out += [json.loads(r.value) for r in batch]
            assert len(out) >= at_least or not at_least, "read fewer records than the live reader"
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())
