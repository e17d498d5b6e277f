"""The baseline every benchmark measures against: raw aiokafka producing pre-serialised
records, with the same delivery settings as the platform's producers (acks=all, idempotence,
linger 5 ms, 256 KB batches), so a ratio to it isolates what the platform adds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

Record = tuple[bytes, bytes, list[tuple[str, bytes]]]  # key, value, headers


def raw_producer(bootstrap: str, client_id: str = "bench-raw") -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        client_id=client_id,
    )


async def raw_produce_eps(bootstrap: str, topic: str, records: Sequence[Record], chunk: int = 1000) -> float:
    """Records per second, sent in chunks and acknowledged chunk by chunk."""
    producer = raw_producer(bootstrap)
    await producer.start()
    try:
        start = time.perf_counter()
        for i in range(0, len(records), chunk):
            futs = [
                await producer.send(topic, value, key=key, headers=headers)
                for key, value, headers in records[i : i + chunk]
            ]
            await asyncio.gather(*futs)
        return len(records) / (time.perf_counter() - start)
    finally:
        await producer.stop()
