"""A transactional outbox: events written in the same database transaction as the state they
describe, then published by a relay. A crash or a broker error at any point leaves either the
state with its events or neither; the relay retries until Kafka has them, always the same bytes
under the same event id (encoded once, when staged).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from libs.common.bus import EventProducer, encode
from libs.common.events import Envelope, utcnow
from libs.common.topics import physical

log = logging.getLogger(__name__)

RELAYED = Counter("msp_outbox_relayed_total", "Events published from a service's outbox", ["service"])
WAITING = Gauge("msp_outbox_waiting", "Events staged in the outbox, not yet published", ["service"])


def outbox_table(metadata: MetaData, service: str) -> Table:
    name = f"{service}_outbox"
    return Table(
        name,
        metadata,
        Column("event_id", String(36), primary_key=True),
        Column("topic", String(255), nullable=False),  # the physical topic
        Column("key", LargeBinary),
        Column("value", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),  # JSON [[name, latin-1 text], ...]
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True)),
        Index(f"ix_{name}_unpublished", "published_at", "created_at"),
    )


def stage(conn: Connection, table: Table, events: Sequence[Envelope], namespace: str = "") -> None:
    """Add events to the outbox in the caller's transaction; an event already staged (the same
    id) is left as it was."""
    if not events:
        return
    now = utcnow()
    rows = []
    for event in events:
        key, value, headers = encode(event)
        rows.append(
            {
                "event_id": str(event.event_id),
                "topic": physical(event.topic, namespace),
                "key": key,
                "value": value,
                "headers": json.dumps([[k, v.decode("latin-1")] for k, v in headers]),
                "created_at": now,
            }
        )
    dialect = postgresql if conn.engine.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).on_conflict_do_nothing(index_elements=["event_id"]), rows)


class OutboxRelay:
    """Publishes what was staged, oldest first, and marks it published once Kafka has it."""

    def __init__(
        self, engine: Engine, table: Table, producer: EventProducer, service: str, *, batch: int = 500
    ) -> None:
        self.engine = engine
        self.table = table
        self.producer = producer
        self.service = service
        self.batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.running = False

    def wake(self) -> None:
        """Something was staged: relay now rather than at the next tick."""
        self._wake.set()

    async def start(self) -> None:
        self.running = True
        self._task = asyncio.create_task(self._forever(), name=f"{self.service}-outbox")

    async def stop(self) -> None:
        self.running = False
        if self._task is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    async def _forever(self) -> None:
        while self.running:
            self._wake.clear()
            try:
                while await self.relay_once() == self.batch:
                    pass
            except Exception:  # noqa: BLE001 - nothing is lost: the rows stay until published
                log.exception("outbox relay failed; retrying shortly")
                await asyncio.sleep(1.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
            except TimeoutError:
                pass

    async def relay_once(self) -> int:
        rows = await asyncio.to_thread(self._due)
        if not rows:
            WAITING.labels(self.service).set(0)
            return 0
        await self.producer.send_raw_many(
            [
                (r.topic, r.key, r.value, [(k, v.encode("latin-1")) for k, v in json.loads(r.headers)])
                for r in rows
            ]
        )
        await asyncio.to_thread(self._mark, [r.event_id for r in rows])
        RELAYED.labels(self.service).inc(len(rows))
        return len(rows)

    def _due(self) -> list[Any]:
        t = self.table
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(t.c.event_id, t.c.topic, t.c.key, t.c.value, t.c.headers)
                    .where(t.c.published_at.is_(None))
                    .order_by(t.c.created_at, t.c.event_id)
                    .limit(self.batch)
                )
            )

    def _mark(self, ids: list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(self.table).where(self.table.c.event_id.in_(ids)).values(published_at=utcnow())
            )
