"""The mechanics both PSA queues share (packet deliveries and the other PSA writes): rows that
are due, taken under a lease so one poster works on each, and finished with their events in
the same transaction. A poster that dies mid-post leaves its row `posting` with a lease that
runs out; the row is then due again (and the PSA is asked first whether the write landed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, and_, select, update

from libs.common.events import Envelope, utcnow
from libs.common.outbox import stage
from services.packet.tables import outbox


def _is(table: Table, key: dict[str, Any]) -> Any:
    return and_(*(table.c[column] == value for column, value in key.items()))


def due(engine: Engine, table: Table, limit: int) -> list[dict[str, Any]]:
    """Pending rows whose time has come, and those whose poster's lease ran out."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(table)
            .where(table.c.status.in_(("pending", "posting")), table.c.next_at <= utcnow())
            .order_by(table.c.next_at)
            .limit(limit)
        ).mappings()
        return [dict(r) for r in rows]


def claim(engine: Engine, table: Table, key: dict[str, Any], lease_s: float) -> bool:
    """Take a due row for `lease_s` seconds; False when another poster took it first."""
    now = utcnow()
    with engine.begin() as conn:
        taken = conn.execute(
            update(table)
            .where(_is(table, key), table.c.status.in_(("pending", "posting")), table.c.next_at <= now)
            .values(status="posting", next_at=now + timedelta(seconds=lease_s))
        )
        return bool(taken.rowcount)


def finish(
    engine: Engine,
    table: Table,
    key: dict[str, Any],
    *,
    status: str,
    attempts: int,
    next_at: datetime | None,
    error: str | None,
    remote_id: str | None,
    events: list[Envelope],
    namespace: str,
) -> None:
    """Record how a post went (posted, retried at `next_at`, failed, skipped) and stage its
    events, in one transaction."""
    values: dict[str, Any] = {"status": status, "attempts": attempts, "last_error": error}
    if next_at is not None:
        values["next_at"] = next_at
    if status == "posted":
        values.update(posted_at=utcnow(), remote_id=remote_id)
    with engine.begin() as conn:
        conn.execute(update(table).where(_is(table, key)).values(**values))
        stage(conn, outbox, list(events), namespace)
