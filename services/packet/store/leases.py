"""The mechanics both PSA queues share (packet deliveries and the other PSA writes): rows that
are due, taken under a lease so one poster works on each, and finished with their events in
the same transaction. A poster that dies mid-post leaves its row `posting` with a lease that
runs out; the row is then due again (and the PSA is asked first whether the write landed)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, select, tuple_, update

from libs.common.db import writing
from libs.common.events import Envelope, utcnow
from libs.common.outbox import stage
from services.packet.tables import outbox


def _is(table: Table, key: dict[str, Any]) -> Any:
    return and_(*(table.c[column] == value for column, value in key.items()))


def claim_due(
    bind: Engine | Connection, table: Table, keys: Sequence[str], limit: int, lease_s: float
) -> list[dict[str, Any]]:
    """Take up to `limit` due rows (pending ones whose time has come, and those whose
    poster's lease ran out), oldest first, for `lease_s` seconds, in one statement: each row
    is taken by one poster (a row another poster took meanwhile no longer matches)."""
    now = utcnow()
    due_now = and_(table.c.status.in_(("pending", "posting")), table.c.next_at <= now)
    key = tuple_(*(table.c[k] for k in keys))
    oldest = select(*(table.c[k] for k in keys)).where(due_now).order_by(table.c.next_at).limit(limit)
    with writing(bind) as conn:
        if conn.dialect.name == "postgresql":
            oldest = oldest.with_for_update(skip_locked=True)  # two posters split what is due
        wanted = [tuple(r) for r in conn.execute(oldest)]
        if not wanted:
            return []
        taken = conn.execute(
            update(table)
            .where(key.in_(wanted), due_now)
            .values(status="posting", next_at=now + timedelta(seconds=lease_s))
            .returning(*table.c)
        ).mappings()
        rows = [dict(r) for r in taken]
    order = {k: n for n, k in enumerate(wanted)}
    return sorted(rows, key=lambda r: order[tuple(r[k] for k in keys)])  # the order they fell due


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
