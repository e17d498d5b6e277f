"""Bus throughput: the project's producer and consumer against raw aiokafka, same broker, same run.

Prints one JSON line per case (1 tenant, 100 tenants) with events/s for produce and consume.
Both paths use the same producer settings (acks=all, idempotence, linger 5 ms) and the same
delivery semantics on the consumer side (manual commit after each batch). The project path
includes what the project adds per event: model serialisation, tenant headers and trace context
on produce (each chunk published inside a span, as the services publish inside a request's or
an event's trace); decoding, validation, the three-way tenant check and the event's trace
context on consume (a recorded span for the sampled traces). The raw
path sends bytes serialised before the clock starts and counts records without decoding them.
Both run in one process with a service process's garbage-collector settings (`settle_heap`).

    python bench/bus.py [--events 50000] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer  # noqa: E402

from bench import spread  # noqa: E402
from bench.raw_kafka import Record, raw_produce_eps  # noqa: E402
from libs.common.bus import EventConsumer, EventProducer  # noqa: E402
from libs.common.events import AlertPayload, AlertReceived, EventSource, utcnow  # noqa: E402
from libs.common.service import settle_heap  # noqa: E402
from libs.common.telemetry import configure_tracing, tracer  # noqa: E402
from libs.common.topics import TOPICS, TopicSpec, ensure_topics  # noqa: E402

CHUNK = 1000
EVENT_BYTES = 1024


def make_events(n: int, tenants: int) -> list[AlertReceived]:
    now = utcnow()
    proto = AlertReceived(
        event_id=uuid.uuid4(),
        tenant_id="t0000",
        occurred_at=now,
        source=EventSource(system="bench", reference="r"),
        payload=AlertPayload(
            fingerprint="fp",
            status="firing",
            title="Disk D: above 90% on FS01",
            device="FS01",
            site="hq",
            description="",
        ),
    )
    pad = EVENT_BYTES - len(proto.model_dump_json())
    description = ("disk usage climbing on the data volume; " * 40)[: max(pad, 0)]
    return [
        AlertReceived(
            event_id=uuid.uuid4(),
            tenant_id=f"t{i % tenants:04d}",
            occurred_at=now,
            source=EventSource(system="bench", reference=f"r{i}"),
            payload=AlertPayload(
                fingerprint=f"fp-{i}",
                status="firing",
                title="Disk D: above 90% on FS01",
                device=f"DEV-{i % 50}",
                site="hq",
                description=description,
            ),
        )
        for i in range(n)
    ]


async def declare(bootstrap: str, name: str) -> str:
    spec = TopicSpec(name, AlertReceived)
    TOPICS[name] = spec
    await ensure_topics(bootstrap, [spec])
    return name


async def project_produce(bootstrap: str, topic: str, events: list[AlertReceived]) -> float:
    producer = EventProducer(bootstrap, client_id="bench-project")
    await producer.start()
    try:
        # The project publishes to each event's declared topic; point the bench topic at it.
        start = time.perf_counter()
        for i in range(0, len(events), CHUNK):
            # As in the services, every publish happens inside a trace (ingest's request span,
            # a consumed event's context), so the events carry a traceparent onward.
            with tracer().start_as_current_span("bench publish"):
                await producer.publish_many(events[i : i + CHUNK], topic=topic)
        return len(events) / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def raw_produce(bootstrap: str, topic: str, events: list[AlertReceived]) -> float:
    records: list[Record] = [(e.tenant_id.encode(), e.model_dump_json().encode(), []) for e in events]
    return await raw_produce_eps(bootstrap, topic, records, CHUNK)


async def project_consume(bootstrap: str, topic: str, n: int) -> float:
    seen = 0
    first: float | None = None
    done = asyncio.Event()

    async def handler(_event: Any, _record: Any) -> None:
        nonlocal seen, first
        if first is None:
            first = time.perf_counter()
        seen += 1
        if seen >= n:
            done.set()

    producer = EventProducer(bootstrap, client_id="bench-dlq")
    await producer.start()
    consumer = EventConsumer(
        service="bench",
        topics=[topic],
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        bootstrap_servers=bootstrap,
        handler=handler,
        producer=producer,
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - (first or time.perf_counter())
        return n / elapsed
    finally:
        consumer.request_stop()
        await task
        await consumer.stop()
        await producer.stop()


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",  # as the project's consumer reads
    )
    await consumer.start()
    try:
        seen, first = 0, None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=250, max_records=500)
            for records in batch.values():
                if records and first is None:
                    first = time.perf_counter()
                seen += len(records)
            if batch:
                await consumer.commit()
        return n / (time.perf_counter() - (first or time.perf_counter()))
    finally:
        await consumer.stop()


async def run_case(bootstrap: str, tenants: int, n: int) -> dict[str, Any]:
    events = make_events(n, tenants)
    # Both paths run under the collector settings of a service process (see `settle_heap`).
    settle_heap()
    try:
        return await _run_case(bootstrap, tenants, n, events)
    finally:
        gc.unfreeze()


async def _run_case(bootstrap: str, tenants: int, n: int, events: list[AlertReceived]) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    t_project = await declare(bootstrap, f"bench.bus.{run}.project")
    t_raw = await declare(bootstrap, f"bench.bus.{run}.raw")
    # The order of the two produce paths alternates between cases, so neither always runs
    # second on a warmer broker and page cache.
    if tenants % 2:
        raw_eps = await raw_produce(bootstrap, t_raw, events)
        project_eps = await project_produce(bootstrap, t_project, events)
    else:
        project_eps = await project_produce(bootstrap, t_project, events)
        raw_eps = await raw_produce(bootstrap, t_raw, events)
    project_consume_eps = await project_consume(bootstrap, t_project, n)
    raw_consume_eps = await raw_consume(bootstrap, t_raw, n)
    return {
        "bench": "bus",
        "tenants": tenants,
        "events": n,
        "event_bytes": len(events[0].model_dump_json()),
        "project_produce_eps": round(project_eps),
        "raw_produce_eps": round(raw_eps),
        "project_consume_eps": round(project_consume_eps),
        "raw_consume_eps": round(raw_consume_eps),
        "produce_ratio": round(project_eps / raw_eps, 3),
        "consume_ratio": round(project_consume_eps / raw_consume_eps, 3),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50000)
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    spread.add_runs(ap)
    args = ap.parse_args()
    bootstrap = args.bootstrap
    if not bootstrap:
        from cli import broker
        from libs.common.settings import REPO_ROOT

        bootstrap = broker.start(broker.BrokerConfig(port=19092, var_dir=REPO_ROOT / "var" / "test"))
    configure_tracing("bench")
    for tenants in (1, 100):
        report = spread.repeat(
            f"bus:{tenants}-tenants",
            args.runs,
            lambda _i, t=tenants: asyncio.run(run_case(bootstrap, t, args.events)),
        )
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
