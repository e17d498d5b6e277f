"""The transactional outbox on the real broker and PostgreSQL: what is staged with a state
change is published once Kafka takes it, the same bytes under the same id, and nothing staged
is lost while the broker refuses."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import Engine, MetaData, Table, select

from libs.common.bus import EventProducer
from libs.common.db import make_engine
from libs.common.events import AlertReceived
from libs.common.outbox import OutboxRelay, outbox_table, stage
from libs.common.topics import ensure_topics, physical
from tests.conftest import unique
from tests.samples import timed_alert

pytestmark = pytest.mark.integration


def alert(tenant: str, n: int) -> AlertReceived:
    return timed_alert(tenant, f"fp-{n}", f"alert {n}", t0=datetime.now(UTC), system="test")


def fresh_outbox(pg_url: str) -> tuple[Engine, str, Table, str]:
    """A database engine, a service name, its new outbox table, and a topic namespace whose
    topics do not exist yet (the broker refuses them until they are created)."""
    engine = make_engine(pg_url)
    service = unique("ob").replace("-", "_")
    table = outbox_table(MetaData(), service)
    table.create(engine)
    return engine, service, table, unique("obns").replace("-", "")


async def test_staged_events_wait_out_a_refusing_broker_and_go_out_as_staged(
    bootstrap: str, pg_url: str
) -> None:
    engine, service, table, namespace = fresh_outbox(pg_url)
    tenant = unique("t")
    events = [alert(tenant, n) for n in range(5)]
    with engine.begin() as conn:
        stage(conn, table, events, namespace)
        stage(conn, table, events[:2], namespace)  # staged twice: kept once
    producer = EventProducer(bootstrap, client_id="relay", request_timeout_ms=1500)
    await producer.start()
    relay = OutboxRelay(engine, table, producer, service)
    try:
        with pytest.raises(Exception):  # noqa: B017 - the client's error for unknown topics
            await relay.relay_once()
        with engine.connect() as conn:
            rows = conn.execute(select(table.c.event_id, table.c.value, table.c.published_at)).all()
        assert len(rows) == 5 and all(r.published_at is None for r in rows), "nothing lost, nothing marked"
        await ensure_topics(bootstrap, namespace=namespace)  # the broker takes them now
        assert await relay.relay_once() == 5
        assert await relay.relay_once() == 0, "published once"
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        physical("alerts.raw.v1", namespace),
        bootstrap_servers=bootstrap,
        group_id=unique("g"),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while len(got) < 5 and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got += [r.value for r in records]
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(r.value for r in rows)
    engine.dispose()


async def test_a_relay_that_keeps_failing_renews_its_producer_and_then_delivers(
    bootstrap: str, pg_url: str
) -> None:
    from prometheus_client import REGISTRY

    engine, service, table, namespace = fresh_outbox(pg_url)  # no topics yet: every attempt fails
    events = [alert(unique("t"), n) for n in range(3)]
    with engine.begin() as conn:
        stage(conn, table, events, namespace)
    producer = EventProducer(bootstrap, client_id="relay", request_timeout_ms=1000)
    await producer.start()
    relay = OutboxRelay(engine, table, producer, service, renew_after_s=0.5)

    def renewals() -> float:
        found = REGISTRY.get_sample_value("msp_outbox_producer_renewals_total", {"service": service})
        return found or 0.0

    def published() -> int:
        with engine.connect() as conn:
            return sum(r.published_at is not None for r in conn.execute(select(table.c.published_at)))

    await relay.start()
    try:
        for _ in range(300):  # the relay's own counter says when it renewed
            if renewals() >= 1:
                break
            await asyncio.sleep(0.1)
        assert renewals() >= 1, "the relay never renewed its producer"
        assert published() == 0
        await ensure_topics(bootstrap, namespace=namespace)
        relay.wake()
        for _ in range(300):
            if published() == 3:
                break
            await asyncio.sleep(0.1)
        assert published() == 3, "the renewed producer delivers once the broker takes the events"
    finally:
        await relay.stop()
        await producer.stop()
        engine.dispose()
