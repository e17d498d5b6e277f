"""Clustering state in the service's database, so a restart (or another instance taking over
a tenant's partition) resumes where the last one stopped.

Written once per micro-batch, after the batch's signal events are acknowledged by Kafka and
before its offsets are committed: a crash in between replays the batch onto the state as it
was, and since signal ids and revisions are derived deterministically the replay re-emits the
same events (readers deduplicate on signal id and revision).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, Text, select, update
from sqlalchemy.dialects import postgresql, sqlite

from libs.common.events import utcnow
from libs.common.inbox import insert_ignore

metadata = MetaData()
signals = Table(
    "triage_signals",
    metadata,
    Column("signal_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("status", String(16), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
signal_alerts = Table(
    "triage_signal_alerts",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("alert_id", String(36), primary_key=True),
    Column("signal_id", String(36), nullable=False),
)
correlations = Table(
    "triage_correlations",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("state", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


@dataclass
class BatchWrite:
    signals: list[dict[str, Any]] = field(default_factory=list)  # rows for triage_signals
    members: list[dict[str, str]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)  # signal ids no longer held in memory
    correlations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.signals or self.members or self.closed or self.correlations)


def _upsert(engine: Engine, table: Table, keys: list[str]):  # type: ignore[no-untyped-def]
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    cols = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    return stmt.on_conflict_do_update(index_elements=keys, set_=cols)


def write(engine: Engine, batch: BatchWrite) -> None:
    now = utcnow()
    with engine.begin() as conn:
        if batch.signals:
            conn.execute(
                _upsert(engine, signals, ["signal_id"]), [{**r, "updated_at": now} for r in batch.signals]
            )
        if batch.members:
            conn.execute(insert_ignore(engine, signal_alerts), batch.members)
        if batch.closed:
            conn.execute(
                update(signals)
                .where(signals.c.signal_id.in_(batch.closed))
                .values(status="closed", updated_at=now)
            )
        if batch.correlations:
            conn.execute(
                _upsert(engine, correlations, ["tenant_id"]),
                [
                    {"tenant_id": t, "state": json.dumps(s, separators=(",", ":")), "updated_at": now}
                    for t, s in batch.correlations.items()
                ],
            )


def load_tenant(
    engine: Engine, tenant_id: str, *, max_alert_ids: int
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[tuple[str, str]]]:
    """The tenant's learned correlations, its signals still held open, and the ids of the
    alerts in them (for recognising a redelivered alert)."""
    with engine.connect() as conn:
        row = conn.execute(select(correlations.c.state).where(correlations.c.tenant_id == tenant_id)).first()
        learned = json.loads(row[0]) if row else None
        live = [
            json.loads(r[0])
            for r in conn.execute(
                select(signals.c.state).where(signals.c.tenant_id == tenant_id, signals.c.status != "closed")
            )
        ]
        ids: list[tuple[str, str]] = []
        live_ids = [s["signal_id"] for s in live]
        for start in range(0, len(live_ids), 500):
            chunk = live_ids[start : start + 500]
            ids.extend(
                (r[0], r[1])
                for r in conn.execute(
                    select(signal_alerts.c.alert_id, signal_alerts.c.signal_id)
                    .where(signal_alerts.c.tenant_id == tenant_id, signal_alerts.c.signal_id.in_(chunk))
                    .limit(max_alert_ids)
                )
            )
    return learned, live, ids[-max_alert_ids:]


def signal_of_alerts(engine: Engine, tenant_id: str, alert_ids: Iterable[str]) -> dict[str, str]:
    ids = list(alert_ids)
    out: dict[str, str] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), 500):
            rows = conn.execute(
                select(signal_alerts.c.alert_id, signal_alerts.c.signal_id).where(
                    signal_alerts.c.tenant_id == tenant_id,
                    signal_alerts.c.alert_id.in_(ids[start : start + 500]),
                )
            )
            out.update({r[0]: r[1] for r in rows})
    return out


def get_signal(engine: Engine, tenant_id: str, signal_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(signals.c.state, signals.c.status).where(
                signals.c.tenant_id == tenant_id, signals.c.signal_id == signal_id
            )
        ).first()
    return {**json.loads(row[0]), "stored_status": row[1]} if row else None
