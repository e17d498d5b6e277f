"""/readyz tells the truth: ready only once the consumer joined its group and with a reachable
database; a rebalance does not make a replica unready."""

import time

import pytest
from fastapi.testclient import TestClient

from services.audit.app import build
from services.audit.settings import AuditSettings
from tests.conftest import unique

pytestmark = pytest.mark.integration


def test_readyz_is_503_until_the_consumer_is_assigned_and_200_after(bootstrap: str, pg_url: str) -> None:
    settings = AuditSettings(
        kafka_bootstrap_servers=bootstrap, database_url=pg_url, consumer_group=unique("g")
    )
    rt, app = build(settings)
    cold = TestClient(app)  # no lifespan: nothing started
    r = cold.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"] == {
        "producer": False,
        "consumers_joined": False,
        "database": True,
        "anchoring": False,
    }
    assert cold.get("/healthz").status_code == 200

    with TestClient(app) as client:  # runs the lifespan: migrate, producer, consumer
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get("/readyz").json() == {
            "ready": True,
            "checks": {"producer": True, "consumers_joined": True, "database": True, "anchoring": True},
        }


def test_readyz_reports_an_unreachable_database(bootstrap: str) -> None:
    settings = AuditSettings(
        kafka_bootstrap_servers=bootstrap, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"
    )
    _, app = build(settings)
    r = TestClient(app).get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["database"] is False


async def test_a_rebalance_or_a_replica_without_partitions_does_not_make_a_consumer_unready(
    bootstrap: str, scratch_topic
) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from libs.common.bus import EventConsumer, EventProducer
    from libs.common.events import AlertReceived
    from tests.conftest import eventually

    topic = await scratch_topic(AlertReceived, partitions=1)
    group = unique("g")
    producer = EventProducer(bootstrap, client_id=unique("p"))
    await producer.start()

    async def handler(_event: object, _record: object) -> None:
        return None

    def member() -> EventConsumer:
        return EventConsumer(
            service="test-svc", topics=[topic], group_id=group, bootstrap_servers=bootstrap,
            handler=handler, producer=producer,
        )  # fmt: skip

    first, second = member(), member()
    tasks = []
    try:
        await first.start()
        tasks.append(asyncio.create_task(first.run()))
        await eventually(lambda: first.joined and first.assigned, "the first member holds the partition")
        await second.start()  # a second replica: the group rebalances
        tasks.append(asyncio.create_task(second.run()))
        await eventually(lambda: second.joined, "the second member joined")
        # One partition, two members: one of them holds nothing, and both are ready.
        await eventually(lambda: first.assigned != second.assigned, "the rebalance settled")
        assert first.joined and second.joined
    finally:
        for c in (first, second):
            c.request_stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in (first, second):
            await c.stop()
        await producer.stop()
