"""When Kafka cannot take a request, ingest answers 503 and publishes nothing of it.

Runs its own broker (the shared one must stay up for the other tests), stops it mid-test and
starts it again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi.testclient import TestClient

from cli import broker
from libs.common.events import AlertReceived
from libs.common.topics import ensure_topics
from services.ingest.app import build
from services.ingest.settings import IngestSettings
from tests.conftest import unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[broker.BrokerConfig]:
    cfg = broker.BrokerConfig(port=19392, var_dir=Path(tmp_path_factory.mktemp("outage")), heap="384m")
    broker.start(cfg)
    asyncio.run(ensure_topics(cfg.bootstrap))
    yield cfg
    broker.stop(cfg)


async def committed_ids(bootstrap: str, tenant: str) -> set[str]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(AlertReceived.topic, p) for p in range(12)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ids: set[str] = set()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                ids.update(json.loads(r.value)["event_id"] for r in records if r.key == tenant.encode())
        return ids
    finally:
        await consumer.stop()


def test_kafka_down_means_503_with_retry_after_and_nothing_published(
    own_broker: broker.BrokerConfig, pg_url: str, tmp_path: Path
) -> None:
    settings = IngestSettings(
        kafka_bootstrap_servers=own_broker.bootstrap,
        database_url=pg_url,
        admin_token="a" * 40,
        signing_pepper="p" * 40,
        publish_timeout_s=3.0,
        var_dir=tmp_path,
    )
    _, app = build(settings)
    tenant = unique("client")
    auth = {"Authorization": "Bearer " + "a" * 40}

    def batch(tag: str) -> dict[str, object]:
        return {"alerts": [{"fingerprint": f"{tag}-{i}", "title": f"alert {tag} {i}"} for i in range(50)]}

    with TestClient(app) as client:
        assert (
            client.post(
                "/v1/admin/tenants", json={"tenant_id": tenant, "name": "c"}, headers=auth
            ).status_code
            == 201
        )
        key = client.post(f"/v1/admin/tenants/{tenant}/keys", json={}, headers=auth).json()["key"]
        ok = client.post("/v1/alerts/batch", json=batch("before"), headers={"X-API-Key": key})
        assert ok.status_code == 202
        accepted = set(ok.json()["event_ids"])

        broker.stop(own_broker)
        started = time.monotonic()
        down = client.post("/v1/alerts/batch", json=batch("during"), headers={"X-API-Key": key})
        assert down.status_code == 503, down.text
        assert down.headers["Retry-After"] == "5"
        assert time.monotonic() - started < 15  # bounded by the publish timeout, no hang
        assert client.get("/readyz").status_code == 503

        broker.start(own_broker)
        for _ in range(30):  # the publisher reconnects on the next request
            after = client.post("/v1/alerts/batch", json=batch("after"), headers={"X-API-Key": key})
            if after.status_code == 202:
                break
            time.sleep(1)
        assert after.status_code == 202, after.text
        accepted |= set(after.json()["event_ids"])

    published = asyncio.run(committed_ids(own_broker.bootstrap, tenant))
    assert published == accepted  # every acknowledged event, and nothing of the refused request
