"""The bus against the real broker: keying, dead-lettering, commit-after-effect."""

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from libs.common.bus import EventConsumer, EventProducer, encode
from libs.common.events import AlertReceived, DeadLetter
from tests.conftest import consume_until, unique
from tests.samples import alert

pytestmark = pytest.mark.integration


async def started_producer(bootstrap: str) -> EventProducer:
    p = EventProducer(bootstrap, client_id=unique("test-producer"))
    await p.start()
    return p


async def test_all_events_of_one_tenant_land_on_one_partition(bootstrap: str) -> None:
    producer = await started_producer(bootstrap)
    try:
        tenant = unique("acme")
        metas = await producer.publish_many(alert(tenant, title=f"alert {i}") for i in range(60))
        assert len({m.partition for m in metas}) == 1
        offsets = [m.offset for m in metas]
        assert offsets == sorted(offsets)  # and in the order they were published
        others = await producer.publish_many(alert(unique("t")) for _ in range(40))
        assert len({m.partition for m in others}) > 1  # while tenants spread over partitions
    finally:
        await producer.stop()


async def _read_deadletters(
    bootstrap: str, original_topic: str, want: int, start: dict[TopicPartition, int]
) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[DeadLetter] = []
    try:
        consumer.assign(list(start))
        for tp, off in start.items():
            consumer.seek(tp, off)
        deadline = asyncio.get_running_loop().time() + 30
        while len(found) < want and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    letter = DeadLetter.model_validate_json(r.value)
                    if letter.original_topic == original_topic:
                        found.append(letter)
    finally:
        await consumer.stop()
    return found


async def _end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        consumer.assign(tps)
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def test_poison_events_go_to_the_deadletter_topic_and_the_consumer_moves_on(
    bootstrap: str, scratch_topic
) -> None:  # type: ignore[no-untyped-def]
    topic = await scratch_topic(AlertReceived)
    tenant = unique("acme")
    dlq_start = await _end_offsets(bootstrap, DeadLetter.topic)
    producer = await started_producer(bootstrap)

    def raw(event: AlertReceived) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        return encode(event)

    good1, good2, boom = (
        alert(tenant, title="first"),
        alert(tenant, title="second"),
        alert(tenant, title="boom"),
    )
    mismatched_key, mismatched_value, mismatched_headers = raw(alert("other-tenant"))
    try:
        for key, value, headers in [
            raw(good1),
            (tenant.encode(), b"{not json", [("tenant_id", tenant.encode())]),
            (tenant.encode(), mismatched_value, [("tenant_id", tenant.encode())]),  # body says another tenant
            raw(boom),
            raw(good2),
        ]:
            await producer.send_raw(topic, value, key=key, headers=headers)

        handled: list[str] = []

        async def handler(event: AlertReceived, _record: Any) -> None:
            if event.payload.title == "boom":
                raise RuntimeError("connector exploded")
            handled.append(event.payload.title)

        consumer = EventConsumer(
            service="test-svc",
            topics=[topic],
            group_id=unique("g"),
            bootstrap_servers=bootstrap,
            handler=handler,
            producer=producer,
            retry_backoff_s=0.01,
        )
        await consume_until(consumer, lambda: consumer.stats.handled + consumer.stats.deadlettered >= 5)

        assert handled == ["first", "second"]
        letters = await _read_deadletters(bootstrap, topic, 3, dlq_start)
        assert len(letters) == 3
        by_type = {letter.error_type for letter in letters}
        assert {"ValidationError", "TenantMismatch", "RuntimeError"} <= by_type
        for letter in letters:
            assert letter.service == "test-svc"
            assert letter.original_key == tenant
            assert letter.original_offset in (1, 2, 3)
        boom_letter = next(x for x in letters if x.error_type == "RuntimeError")
        assert "connector exploded" in boom_letter.error
        assert json.loads(boom_letter.original_value)["payload"]["title"] == "boom"
    finally:
        await producer.stop()


async def test_offsets_are_committed_after_the_effect_so_a_restart_resumes_without_loss(
    bootstrap: str, scratch_topic
) -> None:  # type: ignore[no-untyped-def]
    topic = await scratch_topic(AlertReceived, partitions=1)
    tenant, group = unique("acme"), unique("g")
    producer = await started_producer(bootstrap)
    effects: list[str] = []
    crash_on = {"m-3"}

    async def handler(event: AlertReceived, _record: Any) -> None:
        if event.payload.title in crash_on:
            # A process dying mid-event: no effect, and the loop is cancelled before any commit.
            raise asyncio.CancelledError
        effects.append(event.payload.title)

    try:
        for i in range(6):
            key, value, headers = encode(alert(tenant, title=f"m-{i}", event_id=uuid.uuid4()))
            await producer.send_raw(topic, value, key=key, headers=headers)

        async def run_once() -> None:
            consumer = EventConsumer(
                service="test-svc",
                topics=[topic],
                group_id=group,
                bootstrap_servers=bootstrap,
                handler=handler,
                producer=producer,
                max_records=1,
            )
            await consume_until(consumer, lambda: len(effects) >= 6)

        await run_once()
        assert effects == ["m-0", "m-1", "m-2"]  # stopped at the crash
        crash_on.clear()
        await run_once()
        # The crashed event comes back; nothing before it is redone, nothing after it is lost.
        assert effects == ["m-0", "m-1", "m-2", "m-3", "m-4", "m-5"]
    finally:
        await producer.stop()


async def test_a_batch_consumer_checkpoints_before_it_commits_and_never_commits_past_lost_state(
    bootstrap: str, scratch_topic
) -> None:  # type: ignore[no-untyped-def]
    from libs.common.bus import StateLost

    topic = await scratch_topic(AlertReceived, partitions=1)
    tenant, group = unique("acme"), unique("g")
    producer = await started_producer(bootstrap)
    handled: list[str] = []
    checkpointed: list[int] = []
    fail_on = {"m-7"}

    async def handle(items: list[tuple[AlertReceived, Any]]) -> None:
        for event, _ in items:
            if event.payload.title in fail_on:
                raise StateLost("half a batch applied")
            handled.append(event.payload.title)

    async def checkpoint() -> None:
        checkpointed.append(len(handled))

    async def run_once() -> None:
        consumer = EventConsumer(
            service="test-svc",
            topics=[topic],
            group_id=group,
            bootstrap_servers=bootstrap,
            batch_handler=handle,
            checkpoint=checkpoint,
            producer=producer,
            max_records=5,
            batch_linger_s=0,
        )
        await consumer.start()
        try:
            await asyncio.wait_for(consumer.run(), timeout=20)
        except StateLost:
            pass
        finally:
            await consumer.stop()

    try:
        for i in range(10):
            key, value, headers = encode(alert(tenant, title=f"m-{i}", event_id=uuid.uuid4()))
            await producer.send_raw(topic, value, key=key, headers=headers)
        await run_once()
        assert checkpointed and checkpointed[0] == 5, "the first batch was checkpointed, then committed"
        committed_handled = checkpointed[-1]
        fail_on.clear()
        handled.clear()
        checkpointed.clear()
        consumer_task = asyncio.create_task(run_once())
        deadline = asyncio.get_running_loop().time() + 20
        while len(handled) < 10 - committed_handled and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        consumer_task.cancel()
        # Everything after the last checkpoint comes again, including what the failed batch
        # had half applied.
        assert handled[: 10 - committed_handled] == [f"m-{i}" for i in range(committed_handled, 10)]
    finally:
        await producer.stop()


async def test_an_event_waits_out_a_database_outage_instead_of_being_dead_lettered(
    bootstrap: str, scratch_topic
) -> None:  # type: ignore[no-untyped-def]
    """A handler whose database cannot be reached (a real connection refused, more times than
    the attempts a failing event gets) holds its event until the database answers: handled
    once, nothing dead-lettered."""
    from sqlalchemy import create_engine, text

    from libs.common.bus import DEPENDENCY_WAITS

    topic = await scratch_topic(AlertReceived)
    tenant = unique("outage")
    producer = await started_producer(bootstrap)
    down = create_engine("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=2")
    calls: list[int] = []
    handled: list[str] = []

    async def handler(event: AlertReceived, _record: Any) -> None:
        calls.append(1)
        if len(calls) <= 5:  # the database is down for the first five tries
            with down.connect() as conn:
                conn.execute(text("select 1"))
        handled.append(event.payload.title)

    waits = DEPENDENCY_WAITS.labels("test-outage")._value.get()
    try:
        await producer.publish(alert(tenant, title="during the outage"), topic=topic)
        consumer = EventConsumer(
            service="test-outage",
            topics=[topic],
            group_id=unique("g"),
            bootstrap_servers=bootstrap,
            handler=handler,
            producer=producer,
            retry_backoff_s=0.01,
            max_attempts=3,
        )
        await consume_until(consumer, lambda: consumer.stats.handled + consumer.stats.deadlettered >= 1)
        assert handled == ["during the outage"]
        assert consumer.stats.deadlettered == 0 and len(calls) == 6
        assert DEPENDENCY_WAITS.labels("test-outage")._value.get() == waits + 5
    finally:
        down.dispose()
        await producer.stop()


async def test_lanes_handle_tenants_side_by_side_each_in_order_and_commit_only_what_was_handled(
    bootstrap: str, scratch_topic
) -> None:  # type: ignore[no-untyped-def]
    topic = await scratch_topic(AlertReceived, partitions=1)  # both tenants interleaved on one partition
    slow, fast, group = unique("slow"), unique("fast"), unique("g")
    producer = await started_producer(bootstrap)
    effects: list[tuple[str, str]] = []
    gate = asyncio.Event()
    crash_on: set[str] = set()

    async def handler(event: AlertReceived, _record: Any) -> None:
        if event.tenant_id == slow:
            await gate.wait()  # the slow tenant's first event blocks its lane until released
        if event.payload.title in crash_on:
            raise asyncio.CancelledError  # a process dying mid-event
        effects.append((event.tenant_id, event.payload.title))

    def consumer() -> EventConsumer:
        return EventConsumer(
            service="test-svc",
            topics=[topic],
            group_id=group,
            bootstrap_servers=bootstrap,
            handler=handler,
            producer=producer,
            lanes=4,
        )

    try:
        for i in range(5):
            for tenant in (slow, fast):
                key, value, headers = encode(alert(tenant, title=f"{tenant}-{i}", event_id=uuid.uuid4()))
                await producer.send_raw(topic, value, key=key, headers=headers)
        first = consumer()
        await first.start()
        task = asyncio.create_task(first.run())
        # The fast tenant's five events are handled while the slow one's first is still waiting.
        for _ in range(400):
            if len(effects) == 5:
                break
            await asyncio.sleep(0.05)
        assert effects == [(fast, f"{fast}-{i}") for i in range(5)]
        crash_on.add(f"{slow}-2")  # the slow tenant's third event will crash the process
        gate.set()
        try:
            await asyncio.wait_for(task, timeout=30)
        except asyncio.CancelledError:
            pass
        await first.stop()
        assert [t for x, t in effects if x == slow] == [f"{slow}-0", f"{slow}-1"]
        # After the restart: nothing lost, each tenant in its order; the partition was
        # committed only up to the first event not handled, so what follows it comes again.
        crash_on.clear()
        await consume_until(consumer(), lambda: sum(x == slow for x, _ in effects) >= 5)
        assert [t for x, t in effects if x == slow] == [f"{slow}-{i}" for i in range(5)]
        fast_seen = [t for x, t in effects if x == fast]
        assert set(fast_seen) == {f"{fast}-{i}" for i in range(5)}
        assert fast_seen[:5] == [f"{fast}-{i}" for i in range(5)]
        with pytest.raises(ValueError, match="lanes"):
            EventConsumer(
                service="x",
                topics=[topic],
                group_id="g",
                bootstrap_servers=bootstrap,
                handler=handler,
                producer=producer,
                lanes=0,
            )
    finally:
        await producer.stop()


async def test_a_consumer_reports_its_lag_per_partition_until_it_has_caught_up(
    bootstrap: str, scratch_topic
) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    from libs.common.topics import logical

    topic = await scratch_topic(AlertReceived, partitions=1)
    tenant, group = unique("acme"), unique("g")
    producer = await started_producer(bootstrap)
    series = {"group": group, "topic": logical(topic, ""), "partition": "0"}

    def lag() -> float | None:
        return REGISTRY.get_sample_value("msp_consumer_lag", series)

    seen_at_half: list[float | None] = []
    handled = 0

    async def handler(event: AlertReceived, _record: Any) -> None:
        nonlocal handled
        handled += 1
        if handled == 100:
            seen_at_half.append(lag())

    try:
        for i in range(200):
            key, value, headers = encode(alert(tenant, title=f"m-{i}", event_id=uuid.uuid4()))
            await producer.send_raw(topic, value, key=key, headers=headers)
        consumer = EventConsumer(
            service="test-svc",
            topics=[topic],
            group_id=group,
            bootstrap_servers=bootstrap,
            handler=handler,
            producer=producer,
            max_records=10,
        )
        # Reported after its first poll (190 behind), then about once a second: half-way
        # through it is still behind; once it has read everything it says 0.
        await consume_until(consumer, lambda: handled >= 200 and lag() == 0)
        assert seen_at_half and (seen_at_half[0] or 0) >= 100, seen_at_half
        assert lag() == 0
    finally:
        await producer.stop()


async def test_a_consumer_the_group_dropped_during_a_long_batch_goes_on_and_loses_nothing(
    bootstrap: str, scratch_topic
) -> None:  # type: ignore[no-untyped-def]
    """A batch outlasts the poll interval, so the group gives the partition to another member
    meanwhile (as when a broker restart costs the member its session): the commit after the
    batch is refused and the client has left its group. The consumer goes on (it neither ends
    nor stays up doing nothing), and what it could not commit is delivered again."""
    topic = await scratch_topic(AlertReceived, partitions=1)
    tenant, group = unique("acme"), unique("g")
    producer = await started_producer(bootstrap)
    handled: list[str] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(items: list[tuple[AlertReceived, Any]]) -> None:
        entered.set()
        await release.wait()  # the first batch is held until the other member has the partition
        handled.extend(e.payload.title for e, _ in items)

    consumer = EventConsumer(
        service="test-dropped",
        topics=[topic],
        group_id=group,
        bootstrap_servers=bootstrap,
        batch_handler=slow,
        producer=producer,
        batch_linger_s=0,
        max_poll_interval_s=2.0,
    )
    other = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    task: asyncio.Task[None] | None = None
    titles = [f"m-{i}" for i in range(5)]
    again: list[str] = []
    try:
        await producer.publish_many((alert(tenant, title=t) for t in titles), topic=topic)
        await consumer.start()
        task = asyncio.create_task(consumer.run())
        await asyncio.wait_for(entered.wait(), 30)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        await other.start()
        while not other.assignment():
            assert loop.time() < deadline, "the partition never moved"
            for records in (await other.getmany(timeout_ms=200)).values():
                again.extend(json.loads(r.value)["payload"]["title"] for r in records)
        release.set()
        # Whoever holds the partition now gets the batch again; both keep polling meanwhile.
        while sorted(handled + again) != sorted(titles * 2):
            assert loop.time() < deadline, f"handled {handled}, delivered again {again}"
            assert not task.done(), f"the consumer ended: {task.exception()!r}"
            for records in (await other.getmany(timeout_ms=200)).values():
                again.extend(json.loads(r.value)["payload"]["title"] for r in records)
        assert consumer.stats.commits_refused == 1, "the group never refused the batch's commit"
        # aiokafka 0.14 (pinned) also ends its group coordination with a cancellation of its own
        # here; the consumer replaces the client rather than ending or idling.
        assert consumer.stats.reconnects == 1
        assert not task.done()
    finally:
        await other.stop()
        consumer.request_stop()
        if task is not None:
            await asyncio.wait_for(task, 30)
        await consumer.stop()
        await producer.stop()


async def test_each_consumed_event_is_handled_in_its_own_producers_trace(
    bootstrap: str, scratch_topic
) -> None:  # type: ignore[no-untyped-def]
    """The consumer enters one trace context per run of events that carry the same one (the
    events of one publish); every event is still handled, and logs, under its own producer's
    trace, and an event that carries none starts a trace of its own."""
    from libs.common.telemetry import configure_tracing, current_trace_id, tracer

    configure_tracing("test")
    topic = await scratch_topic(AlertReceived)
    tenant = unique("acme")  # one tenant: one partition, one order
    producer = await started_producer(bootstrap)
    sent: dict[str, str | None] = {}
    try:
        for name, size in (("a", 4), ("none", 2), ("b", 3), ("a2", 1)):
            events = [alert(tenant, title=f"{name}-{i}") for i in range(size)]
            if name == "none":  # published outside any trace: no traceparent header
                await producer.publish_many(events, topic=topic)
                sent.update((e.payload.title, None) for e in events)
                continue
            with tracer().start_as_current_span(f"publish {name}"):
                trace_id = current_trace_id()
                await producer.publish_many(events, topic=topic)
            sent.update((e.payload.title, trace_id) for e in events)
        seen: dict[str, str | None] = {}

        async def handler(event: AlertReceived, _record: Any) -> None:
            seen[event.payload.title] = current_trace_id()

        consumer = EventConsumer(
            service="test-svc",
            topics=[topic],
            group_id=unique("g"),
            bootstrap_servers=bootstrap,
            handler=handler,
            producer=producer,
        )
        await consume_until(consumer, lambda: len(seen) >= len(sent))
    finally:
        await producer.stop()
    assert seen.keys() == sent.keys()
    for title, trace_id in sent.items():
        if trace_id is not None:
            assert seen[title] == trace_id, title
    own = [seen["none-0"], seen["none-1"]]
    assert None not in own and len(set(own)) == 2  # each started a trace of its own
    assert not set(own) & {t for t in sent.values() if t}
    assert len({sent["a-0"], sent["b-0"], sent["a2-0"]}) == 3
