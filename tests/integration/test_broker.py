"""The integration tests run against a real Apache Kafka broker, and this proves it."""

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from cli.broker import cluster_id
from libs.common.topics import TOPICS, drop_namespace, ensure_topics
from tests.conftest import unique

pytestmark = pytest.mark.integration


async def test_a_real_kraft_broker_answers_with_its_cluster_id(bootstrap: str) -> None:
    cid = await cluster_id(bootstrap)
    # KRaft cluster ids are 22-character URL-safe base64 UUIDs, made by `kafka-storage format`.
    assert len(cid) == 22
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        desc = await admin.describe_cluster()
        assert desc["cluster_id"] == cid
        assert desc["brokers"][0]["host"].startswith("127.")
    finally:
        await admin.close()


async def test_ensure_topics_is_idempotent_and_declares_twelve_partitions(bootstrap: str) -> None:
    await ensure_topics(bootstrap)
    assert await ensure_topics(bootstrap) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(TOPICS))
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        assert partitions == {name: spec.partitions for name, spec in TOPICS.items()}
        assert set(partitions.values()) == {12}
    finally:
        await admin.close()


async def test_a_namespace_can_be_dropped_whole_and_the_platforms_own_topics_never(bootstrap: str) -> None:
    namespace = unique("drop").replace("-", "")
    created = await ensure_topics(bootstrap, namespace=namespace)
    assert len(created) == len(TOPICS)
    dropped = await drop_namespace(bootstrap, namespace)
    assert sorted(dropped) == sorted(created)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        left = [t for t in await admin.list_topics() if t.startswith(f"{namespace}.")]
    finally:
        await admin.close()
    assert left == []
    with pytest.raises(ValueError, match="empty namespace"):
        await drop_namespace(bootstrap, "")
