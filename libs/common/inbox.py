"""The inbox: which events a service has taken in, keyed by event id (idempotent by design).

A redelivered event finds its row already there and changes nothing. Services use it to count
what they consumed per tenant and to make their effects happen once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from libs.common.db import writing
from libs.common.events import Envelope, utcnow


def inbox_table(metadata: MetaData, service: str) -> Table:
    return Table(
        f"{service}_inbox",
        metadata,
        Column("event_id", String(36), primary_key=True),
        Column("tenant_id", String(63), nullable=False),
        Column("topic", String(100), nullable=False),
        Column("event_type", String(100), nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False),
        Index(f"ix_{service}_inbox_tenant", "tenant_id"),
    )


def insert_ignore(engine: Engine | Connection, table: Table):  # type: ignore[no-untyped-def]
    """An INSERT that does nothing when the primary key or a unique key already exists."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return insert(table).prefix_with("IGNORE")


def record(engine: Engine, table: Table, event: Envelope, *, received_at: datetime | None = None) -> bool:
    """Remember an event; returns False when it was already there (a redelivery)."""
    stmt = (
        insert_ignore(engine, table)
        .returning(table.c.event_id)
        .values(
            event_id=str(event.event_id),
            tenant_id=event.tenant_id,
            topic=event.topic,
            event_type=event.type,
            received_at=received_at or utcnow(),
        )
    )
    with engine.begin() as conn:
        # RETURNING, not rowcount: PostgreSQL's driver reports none for ON CONFLICT DO NOTHING.
        return conn.execute(stmt).first() is not None


def counts(engine: Engine, table: Table, tenant_id: str) -> dict[str, int]:
    """Events taken in for one tenant, by topic."""
    stmt = select(table.c.topic, func.count()).where(table.c.tenant_id == tenant_id).group_by(table.c.topic)
    with engine.connect() as conn:
        return {topic: n for topic, n in conn.execute(stmt)}


def create_inbox(op, service: str) -> None:  # type: ignore[no-untyped-def]
    """Migration step that creates a service's inbox table (call from its Alembic revision)."""
    import sqlalchemy as sa

    name = f"{service}_inbox"
    op.create_table(
        name,
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(f"ix_{name}_tenant", name, ["tenant_id"])


def record_all(bind: Engine | Connection, table: Table, events: list[Envelope]) -> int:
    """Remember several events in one statement; returns how many were new (a redelivered
    batch, or one event twice in it, adds nothing). On a connection, in its transaction."""
    rows = list(
        {
            str(e.event_id): {
                "event_id": str(e.event_id),
                "tenant_id": e.tenant_id,
                "topic": e.topic,
                "event_type": e.type,
                "received_at": utcnow(),
            }
            for e in events
        }.values()
    )
    if not rows:
        return 0
    with writing(bind) as conn:
        return len(conn.execute(insert_ignore(conn, table).returning(table.c.event_id), rows).all())


class Counted:
    """What a service's own consumers took in, per tenant and topic (`/v1/counts`): each
    handler is wrapped so that an event is recorded after it was handled (a redelivery is
    recorded once). Nothing is audited per event: the decisions are."""

    def __init__(self, engine: Engine, table: Table) -> None:
        self.engine = engine
        self.table = table  # the service's inbox (`inbox_table` in its tables)

    def handler(
        self,
        handle: Callable[[Any, Any], Awaitable[None]],
        *,
        recorded_by_handler: Callable[[Any], bool] = lambda _event: False,
    ) -> Callable[[Any, Any], Awaitable[None]]:
        """`recorded_by_handler(event)` says which events the handler records itself
        (`record_all` on its own connection, in the transaction of what it did with them)."""

        async def counted(event: Any, record: Any) -> None:
            await handle(event, record)
            if not recorded_by_handler(event):
                await asyncio.to_thread(record_all, self.engine, self.table, [event])

        return counted

    def batch_handler(
        self, handle: Callable[[list[tuple[Any, Any]]], Awaitable[None]]
    ) -> Callable[[list[tuple[Any, Any]]], Awaitable[None]]:
        async def counted(items: list[tuple[Any, Any]]) -> None:
            await handle(items)
            await asyncio.to_thread(record_all, self.engine, self.table, [event for event, _ in items])

        return counted

    def counts(self, tenant_id: str) -> dict[str, int]:
        return counts(self.engine, self.table, tenant_id)
