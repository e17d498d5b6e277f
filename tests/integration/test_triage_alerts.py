"""Alert clustering on the real broker and PostgreSQL: the triage service's runtime, in this
process, fed through Kafka and read back from `signals.clustered.v1`."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from libs.common.bus import EventProducer
from libs.common.events import AlertReceived
from libs.common.topics import ensure_topics, physical
from services.triage.app import assemble
from services.triage.settings import TriageSettings
from tests.conftest import start_runtime, unique
from tests.samples import timed_alert

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def alert(tenant: str, fingerprint: str, title: str, *, at: float, **kw: Any) -> AlertReceived:
    return timed_alert(tenant, fingerprint, title, at=at, t0=T0, **kw)


class Triage:
    """The triage runtime on a topic namespace of its own, plus a reader of its output topic
    (`reads`) into `read`."""

    reads = "signals.clustered.v1"

    def __init__(self, bootstrap: str, db_url: str, tmp: Path, *, namespace: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.namespace = namespace or unique("tri").replace("-", "")
        self.settings = TriageSettings(
            kafka_bootstrap_servers=bootstrap,
            topic_namespace=self.namespace,
            database_url=db_url,
            var_dir=tmp,
            consumer_group=f"g-{self.namespace}",
            embeddings_enabled=False,
        )
        self.read: list[dict[str, Any]] = []
        self.signals = self.read
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, namespace=self.namespace)
        self.service = assemble(self.settings)
        self.rt, self.app = self.service.rt, self.service.app
        await start_runtime(self.rt, "triage")
        self.producer = EventProducer(self.bootstrap, client_id="test", namespace=self.namespace)
        await self.producer.start()
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        await self.producer.stop()
        await self.rt.stop()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            physical(self.reads, self.namespace),
            bootstrap_servers=self.bootstrap,
            group_id=unique("reader"),
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                for records in batch.values():
                    self.read.extend(json.loads(r.value) for r in records)
        finally:
            await consumer.stop()

    async def send(self, *events: AlertReceived) -> None:
        await self.producer.publish_many(events)

    async def until(self, check: Any, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, f"timed out; signal events so far: {self.latest()}"
            await asyncio.sleep(0.1)

    def latest(self, tenant: str | None = None) -> dict[str, dict[str, Any]]:
        """The latest revision of each signal (of one tenant)."""
        out: dict[str, dict[str, Any]] = {}
        for ev in self.signals:
            if tenant and ev["tenant_id"] != tenant:
                continue
            p = ev["payload"]
            if p["signal_id"] not in out or p["revision"] > out[p["signal_id"]]["revision"]:
                out[p["signal_id"]] = {**p, "tenant_id": ev["tenant_id"]}
        return out

    def signal_of(self) -> dict[str, str]:
        """Alert id -> signal id, from every revision's added alerts."""
        return {
            a: ev["payload"]["signal_id"] for ev in self.signals for a in ev["payload"]["added_alert_ids"]
        }


@pytest.fixture
async def triage(bootstrap: str, pg_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    t = Triage(bootstrap, pg_url, tmp_path)
    await t.start()
    yield t
    await t.stop()
    await t.close()


async def test_repeats_of_one_fingerprint_fold_into_one_signal_and_a_redelivery_counts_once(
    triage: Triage,
) -> None:
    tenant = unique("fold")
    first = alert(tenant, "disk-fs01", "Disk D: above 91% on FS01", at=0, device="FS01")
    repeats = [
        alert(tenant, "disk-fs01", f"Disk D: above {92 + i}% on FS01", at=60 * (i + 1), device="FS01")
        for i in range(4)
    ]
    await triage.send(first)
    await triage.send(*repeats, first)  # the first one again: a redelivery
    ids = {str(e.event_id) for e in [first, *repeats]}
    await triage.until(lambda: ids <= triage.signal_of().keys())
    signals = triage.latest(tenant)
    assert len(signals) == 1
    (sig,) = signals.values()
    await triage.until(lambda: triage.latest(tenant)[sig["signal_id"]]["count"] == 5)
    sig = triage.latest(tenant)[sig["signal_id"]]
    assert sig["count"] == 5, "five distinct alerts; the redelivered one is not counted twice"
    assert sig["devices"] == ["FS01"]
    assert any(r["feature"] == "fingerprint" for r in sig["reasons"])
    opened = [e for e in triage.signals if e["tenant_id"] == tenant and e["payload"]["state"] == "opened"]
    assert len(opened) == 1
    # The tenant's SLA measures: five firing alerts, one signal, each alert's time to classify.
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("msp_sla_alerts_total", {"tenant": tenant}) == 5
    assert REGISTRY.get_sample_value("msp_sla_signals_opened_total", {"tenant": tenant}) == 1
    classified = {"tenant": tenant, "kind": "alert"}
    assert REGISTRY.get_sample_value("msp_sla_time_to_classify_seconds_count", classified) == 5


async def test_a_flapping_alert_is_marked_and_not_reopened(triage: Triage) -> None:
    tenant = unique("flap")
    events = []
    t = 0.0
    for _ in range(3):  # fire, resolve, fire, resolve, fire, ... a minute apart
        events.append(alert(tenant, "vpn-tunnel", "VPN tunnel to branch down", at=t, device="FW1", started=t))
        events.append(
            alert(
                tenant,
                "vpn-tunnel",
                "VPN tunnel to branch down",
                at=t + 30,
                device="FW1",
                started=t,
                status="resolved",
            )
        )
        t += 60
    events.append(alert(tenant, "vpn-tunnel", "VPN tunnel to branch down", at=t, device="FW1", started=t))
    await triage.send(*events)
    await triage.until(lambda: str(events[-1].event_id) in triage.signal_of())
    await triage.until(lambda: any(s["flapping"] for s in triage.latest(tenant).values()))
    signals = triage.latest(tenant)
    assert len(signals) == 1, "a flap is one signal, not one per re-fire"
    opened = [e for e in triage.signals if e["tenant_id"] == tenant and e["payload"]["state"] == "opened"]
    assert len(opened) == 1
    (sig,) = signals.values()
    assert sig["state"] != "resolved"


async def test_a_burst_across_ten_devices_of_one_site_becomes_one_signal(triage: Triage) -> None:
    tenant = unique("burst")
    burst = [
        alert(
            tenant,
            f"ping-FS{i:02d}",
            f"Ping loss 100% to FS{i:02d}",
            at=i * 5,
            device=f"FS{i:02d}",
            site="hq",
        )
        for i in range(10)
    ]
    elsewhere = alert(tenant, "ping-BR01", "Ping loss 100% to BR01", at=20, device="BR01", site="branch")
    await triage.send(*burst, elsewhere)
    ids = {str(e.event_id) for e in [*burst, elsewhere]}
    await triage.until(lambda: ids <= triage.signal_of().keys())
    of = triage.signal_of()
    assert len({of[str(e.event_id)] for e in burst}) == 1
    assert of[str(elsewhere.event_id)] != of[str(burst[0].event_id)], "another site is another problem"
    await triage.until(lambda: len(triage.latest(tenant)[of[str(burst[0].event_id)]]["devices"]) == 10)
    sig = triage.latest(tenant)[of[str(burst[0].event_id)]]
    assert any(r["feature"] == "site" for r in sig["reasons"])


async def test_two_tenants_with_identical_alerts_never_share_a_signal(triage: Triage) -> None:
    a, b = unique("tena"), unique("tenb")
    sent: dict[str, list[AlertReceived]] = {a: [], b: []}
    for i in range(6):
        for tenant in (a, b):
            ev = alert(
                tenant,
                "svc-spooler-PRN1",
                "Service Spooler stopped on PRN1",
                at=i * 10,
                device="PRN1",
                site="hq",
            )
            sent[tenant].append(ev)
    await triage.send(*sent[a], *sent[b])
    ids = {str(e.event_id) for evs in sent.values() for e in evs}
    await triage.until(lambda: ids <= triage.signal_of().keys())
    of = triage.signal_of()
    sig_a = {of[str(e.event_id)] for e in sent[a]}
    sig_b = {of[str(e.event_id)] for e in sent[b]}
    assert not sig_a & sig_b
    for ev in triage.signals:  # every revision names only its own tenant's alerts
        own = {str(e.event_id) for e in sent.get(ev["tenant_id"], [])}
        assert set(ev["payload"]["member_alert_ids"]) <= own
        assert set(ev["payload"]["added_alert_ids"]) <= own


async def test_a_restart_keeps_the_open_signals(bootstrap: str, pg_url: str, tmp_path: Path) -> None:
    tenant = unique("restart")
    first = Triage(bootstrap, pg_url, tmp_path)
    await first.start()
    try:
        before = [
            alert(tenant, "cpu-web1", "CPU above 95% on WEB1", at=i * 30, device="WEB1") for i in range(3)
        ]
        await first.send(*before)
        await first.until(lambda: {str(e.event_id) for e in before} <= first.signal_of().keys())
        (sid,) = first.latest(tenant)
    finally:
        await first.stop()
    second = Triage(bootstrap, pg_url, tmp_path, namespace=first.namespace)
    second.signals = first.signals  # the same topic: keep what was read
    second._reader = first._reader
    await second.start()
    try:
        after = alert(tenant, "cpu-web1", "CPU above 97% on WEB1", at=120, device="WEB1")
        await second.send(after)
        await second.until(lambda: str(after.event_id) in second.signal_of())
        assert second.signal_of()[str(after.event_id)] == sid, "the restarted service resumed the open signal"
        assert len(second.latest(tenant)) == 1
        await second.until(lambda: second.latest(tenant)[sid]["count"] == 4)
    finally:
        await second.stop()
        await second.close()


async def test_a_broker_error_while_publishing_keeps_what_the_revision_was_to_say(
    triage: Triage,
) -> None:
    """The sweeper (and the batch path) publish a revision before marking it published: when
    the broker refuses, the signal's changes stay pending and go out with the next revision,
    whose number was never used, instead of vanishing."""
    clustering = triage.service.clustering
    tenant = unique("nobroker")
    first = alert(tenant, "disk-fs09", "Disk D: above 91% on FS09", at=0, device="FS09")
    await triage.send(first)
    await triage.until(lambda: str(first.event_id) in triage.signal_of())
    sid = triage.signal_of()[str(first.event_id)]
    resolved = alert(
        tenant, "disk-fs09", "Disk D: above 91% on FS09", at=30, device="FS09", started=0, status="resolved"
    )
    working = clustering.producer
    # A producer whose topics the broker does not have: every send fails after its timeout.
    gone = unique("gone").replace("-", "")
    broken = EventProducer(triage.bootstrap, client_id="refused", namespace=gone, request_timeout_ms=1500)
    await broken.start()
    clustering.producer = broken
    try:
        c = await clustering._tenant(tenant)
        with pytest.raises(Exception):  # noqa: B017 - whatever the client raises, it raises
            async with clustering._lock:
                c.add(resolved)
                c.signals[sid].published_at = 0.0  # due now, not after the growth interval
                await clustering._publish([c])
        sig = c.signals[sid]
        assert sig.pending == "updated" and str(resolved.event_id) in sig.added, "nothing was dropped"
        spent = sig.revision
    finally:
        clustering.producer = working
        await broken.stop()
    async with clustering._lock:
        await clustering._publish([c])
    await triage.until(lambda: str(resolved.event_id) in triage.signal_of())
    (rev,) = [
        e["payload"] for e in triage.signals if str(resolved.event_id) in e["payload"]["added_alert_ids"]
    ]
    assert rev["signal_id"] == sid and rev["revision"] == spent + 1 and rev["open_alerts"] == 0
    numbers = [e["payload"]["revision"] for e in triage.signals if e["payload"]["signal_id"] == sid]
    assert len(numbers) == len(set(numbers)), "no revision number published twice"


async def test_a_batch_waits_out_a_broker_refusing_with_its_state_intact(triage: Triage) -> None:
    """The broker refuses a poll's revisions with an error a client may retry (here: it does not
    have the topic, as a restarted broker may say until it has loaded its metadata): the batch
    waits (holding the consumer back) with the state intact, and its revisions go out once
    the broker takes them, instead of the state being given up and the process exiting."""
    clustering = triage.service.clustering
    tenant = unique("outage")
    first = alert(tenant, "disk-fs07", "Disk D: above 93% on FS07", at=0, device="FS07")
    working = clustering.producer
    gone = unique("gone").replace("-", "")
    refused = EventProducer(triage.bootstrap, client_id="refused", namespace=gone, request_timeout_ms=1000)
    await refused.start()
    clustering.producer = refused
    waits = clustering.dependency_waits
    task = asyncio.create_task(clustering.handle_batch([(first, None)]))
    try:
        await triage.until(lambda: clustering.dependency_waits >= waits + 2 or task.done(), timeout_s=30)
        assert not task.done(), f"the batch did not wait for the broker: {task.exception()!r}"
        assert not clustering.broken
        assert str(first.event_id) not in triage.signal_of()
    finally:
        clustering.producer = working  # the broker takes them again
    await asyncio.wait_for(task, 30)
    await refused.stop()
    await triage.until(lambda: str(first.event_id) in triage.signal_of())
    assert not clustering.broken
    (rev,) = [e["payload"] for e in triage.signals if str(first.event_id) in e["payload"]["added_alert_ids"]]
    assert rev["count"] == 1 and rev["state"] == "opened"
