"""Clustering state in the service's database, so a restart (or another instance taking over
a tenant's partition) resumes where the last one stopped.

Written at each checkpoint (about every five seconds, and on rebalance and shutdown), always
before the consumer commits its offsets: a crash replays the records after the checkpoint onto
the state as it was then. Signal ids are derived from their first alert, so the replay
re-emits the same signals (readers deduplicate on signal id and revision). Which signal holds
an alert is told by the signal events themselves (`added_alert_ids`), not stored per alert.
The same transaction keeps what ticket triage reads of the published signals (their state,
title, severity, devices and sites: `triage_open_signals`), so ticket triage needs no consumer
of the signal stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, update

from libs.common.db import upsert
from libs.common.events import utcnow
from services.triage.tables import correlations, reservations, signals
from services.triage.tickets.store import apply_signals


@dataclass
class BatchWrite:
    signals: list[dict[str, Any]] = field(default_factory=list)  # rows for triage_signals
    closed: list[str] = field(default_factory=list)  # signal ids no longer held in memory
    correlations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What tickets see of the published signals (tenant, fields): `tickets.store.apply_signals`.
    context: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.signals or self.closed or self.correlations or self.context)


def write(engine: Engine, batch: BatchWrite) -> None:
    now = utcnow()
    with engine.begin() as conn:
        if batch.signals:
            conn.execute(
                upsert(engine, signals, ["signal_id"]), [{**r, "updated_at": now} for r in batch.signals]
            )
        if batch.closed:
            conn.execute(
                update(signals)
                .where(signals.c.signal_id.in_(batch.closed))
                .values(status="closed", updated_at=now)
            )
        if batch.correlations:
            conn.execute(
                upsert(engine, correlations, ["tenant_id"]),
                [
                    {"tenant_id": t, "state": json.dumps(s, separators=(",", ":")), "updated_at": now}
                    for t, s in batch.correlations.items()
                ],
            )
        if batch.context:
            apply_signals(conn, batch.context)


def reserve_revisions(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Reserve revision numbers up to `reserved` for each row's signal (never lowering one)."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            upsert(engine, reservations, ["signal_id"], newer="reserved"),
            [{**r, "updated_at": now} for r in rows],
        )


def load_tenant(
    engine: Engine, tenant_id: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, int]]:
    """The tenant's learned correlations, its signals still held open, and the revision
    numbers reserved per signal."""
    with engine.connect() as conn:
        row = conn.execute(select(correlations.c.state).where(correlations.c.tenant_id == tenant_id)).first()
        learned = json.loads(row[0]) if row else None
        live = [
            json.loads(r[0])
            for r in conn.execute(
                select(signals.c.state).where(signals.c.tenant_id == tenant_id, signals.c.status != "closed")
            )
        ]
        reserved = {
            sid: int(n)
            for sid, n in conn.execute(
                select(reservations.c.signal_id, reservations.c.reserved).where(
                    reservations.c.tenant_id == tenant_id
                )
            )
        }
    return learned, live, reserved


def get_signal(engine: Engine, tenant_id: str, signal_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(signals.c.state, signals.c.status).where(
                signals.c.tenant_id == tenant_id, signals.c.signal_id == signal_id
            )
        ).first()
    return _stored(row[0], row[1]) if row else None


def list_signals(engine: Engine, tenant_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        q = select(signals.c.state, signals.c.status).where(signals.c.tenant_id == tenant_id)
        if status:
            q = q.where(signals.c.status == status)
        rows = conn.execute(q.order_by(signals.c.updated_at.desc()).limit(limit))
        return [_stored(r[0], r[1]) for r in rows]


def _stored(state: str, status: str) -> dict[str, Any]:
    return {**json.loads(state), "stored_status": status}
