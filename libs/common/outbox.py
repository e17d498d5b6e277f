"""A transactional outbox: events written in the same database transaction as the state they
describe, then published by a relay. A crash or a broker error at any point leaves either the
state with its events or neither; the relay retries until Kafka has them, always the same bytes
under the same event id (encoded once, when staged).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
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
RENEWALS = Counter(
    "msp_outbox_producer_renewals_total", "Kafka producers renewed after relaying kept failing", ["service"]
)


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
        self,
        engine: Engine,
        table: Table,
        producer: EventProducer,
        service: str,
        *,
        batch: int = 500,
        renew_after_s: float = 15.0,
        publish_timeout_s: float = 20.0,
    ) -> None:
        self.engine = engine
        # Relaying that has failed for this long renews the Kafka client: once the broker is
        # back, recovery is bounded by this, whatever state the old client was left in.
        self.renew_after_s = renew_after_s
        # A publish that has not been acknowledged in this time counts as failed (a client left
        # in a bad state by a broker restart can wait forever without raising).
        self.publish_timeout_s = publish_timeout_s
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
        failing_since: float | None = None
        while self.running:
            self._wake.clear()
            attempt_started = time.monotonic()
            try:
                while await self.relay_once() == self.batch:
                    attempt_started = time.monotonic()
                failing_since = None
            except Exception:  # noqa: BLE001 - nothing is lost: the rows stay until published
                log.exception("outbox relay failed; retrying shortly")
                now = time.monotonic()
                failing_since = failing_since or attempt_started
                if now - failing_since >= self.renew_after_s:
                    log.warning("outbox relay still failing: renewing the Kafka producer")
                    RENEWALS.labels(self.service).inc()
                    try:
                        await self.producer.renew()
                    except Exception:  # noqa: BLE001 - the broker may still be down: try again later
                        log.exception("renewing the Kafka producer failed")
                    failing_since = now
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
        await asyncio.wait_for(
            self.producer.send_raw_many(
                [
                    (r.topic, r.key, r.value, [(k, v.encode("latin-1")) for k, v in json.loads(r.headers)])
                    for r in rows
                ]
            ),
            timeout=self.publish_timeout_s,
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
