"""Shared fixtures: the real broker and a fresh PostgreSQL database.

`msp test` (and CI) start both and pass them in through KAFKA_BOOTSTRAP_SERVERS and
MSP_TEST_DATABASE_URL; run bare, pytest starts them itself with the project's own tools.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from libs.common.topics import TOPICS, TopicSpec, ensure_topics

pytest_plugins = ["tests.peers.fixtures"]


def unique(prefix: str) -> str:
    """Tests isolate by unique names (tenants, groups, topics), not by teardown."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def partition_twin(tenant: str, partitions: int = 12) -> str:
    """Another tenant whose events land on the same partition as `tenant`'s (the producer's own
    partitioner): what it sends after `tenant`'s events is consumed after them, so seeing it
    handled proves those were handled too (a positive marker for "nothing happened")."""
    from aiokafka.partitioner import DefaultPartitioner

    choose = DefaultPartitioner()
    every = list(range(partitions))
    want = choose(tenant.encode(), every, every)
    while True:
        twin = unique("twin")
        if choose(twin.encode(), every, every) == want:
            return twin


@pytest.fixture(scope="session")
def bootstrap() -> str:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not servers:
        from cli import broker
        from libs.common.settings import REPO_ROOT

        servers = broker.start(broker.BrokerConfig(port=19092, var_dir=REPO_ROOT / "var" / "test"))
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = servers
    asyncio.run(ensure_topics(servers))
    return servers


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    admin_url = os.environ.get("MSP_TEST_DATABASE_URL")
    if not admin_url:
        from cli import postgres

        admin_url = postgres.start()
    name = f"msp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def scratch_topic(bootstrap: str):  # type: ignore[no-untyped-def]
    """Declare a throw-away topic for one model, so a test reads only its own records."""
    created: list[str] = []

    async def make(model: type, partitions: int = 12) -> str:
        name = unique(f"test.{model.__name__.lower()}")
        spec = TopicSpec(name, model, partitions=partitions)
        TOPICS[name] = spec
        await ensure_topics(bootstrap, [spec])
        created.append(name)
        return name

    yield make
    for name in created:
        TOPICS.pop(name, None)


async def eventually(check: Callable[[], Any], what: str, timeout_s: float = 60.0) -> None:
    """Wait until `check()` (run off the event loop: it may query a database) holds."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def start_runtime(rt: Any, what: str, timeout_s: float = 90.0) -> None:
    """Start a service runtime in this process and wait until its consumers have partitions (a
    freshly formatted broker takes a while to set up its first consumer group)."""
    await rt.start()
    deadline = time.monotonic() + timeout_s
    while not all(c.assigned for c in rt.consumers):
        assert time.monotonic() < deadline, f"{what} consumers never got partitions"
        await asyncio.sleep(0.1)


async def consume_until(consumer: Any, done: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Run a started-here EventConsumer until `done()` holds (or its loop ends), then stop it."""
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    for _ in range(int(timeout_s / 0.05)):  # polling: the condition is the test's, not an event
        if task.done() or done():
            break
        await asyncio.sleep(0.05)
    consumer.request_stop()
    try:
        await task
    except asyncio.CancelledError:  # the loop was cancelled by a simulated crash
        pass
    await consumer.stop()
