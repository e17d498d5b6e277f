"""Reading and appending the audit trail; every query takes the tenant explicitly."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from libs.common.events import AuditEvent, utcnow
from libs.common.inbox import insert_ignore
from services.audit.chain import GENESIS, ChainEntry, Verification, entry_hash, verify
from services.audit.tables import audit_events, chain_heads


def append(engine: Engine, event: AuditEvent) -> bool:
    """Append one event to its tenant's chain; False if it was already recorded."""
    body = event.model_dump_json()
    try:
        with engine.begin() as conn:
            if conn.execute(
                select(audit_events.c.seq).where(audit_events.c.event_id == str(event.event_id))
            ).first():
                return False
            conn.execute(
                insert_ignore(engine, chain_heads).values(
                    tenant_id=event.tenant_id, tenant_seq=0, hash=GENESIS
                )
            )
            head = conn.execute(
                select(chain_heads.c.tenant_seq, chain_heads.c.hash)
                .where(chain_heads.c.tenant_id == event.tenant_id)
                .with_for_update()
            ).one()
            seq = head.tenant_seq + 1
            digest = entry_hash(head.hash, seq, body)
            p = event.payload
            conn.execute(
                audit_events.insert().values(
                    event_id=str(event.event_id),
                    tenant_id=event.tenant_id,
                    tenant_seq=seq,
                    occurred_at=event.occurred_at,
                    recorded_at=utcnow(),
                    actor=p.actor,
                    action=p.action,
                    subject_kind=p.subject_kind,
                    subject_id=p.subject_id,
                    outcome=p.outcome,
                    trace_id=p.trace_id,
                    body=body,
                    prev_hash=head.hash,
                    hash=digest,
                )
            )
            conn.execute(
                update(chain_heads)
                .where(chain_heads.c.tenant_id == event.tenant_id)
                .values(tenant_seq=seq, hash=digest)
            )
        return True
    except IntegrityError:
        # The same event id raced in through a second consumer during a rebalance.
        return False


def query(
    engine: Engine,
    tenant_id: str,
    *,
    action: str | None = None,
    subject_id: str | None = None,
    trace_id: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    c = audit_events.c
    stmt = select(
        c.tenant_seq,
        c.event_id,
        c.occurred_at,
        c.recorded_at,
        c.actor,
        c.action,
        c.subject_kind,
        c.subject_id,
        c.outcome,
        c.trace_id,
        c.hash,
        c.body,
    ).where(c.tenant_id == tenant_id)
    if action:
        stmt = stmt.where(c.action == action)
    if subject_id:
        stmt = stmt.where(c.subject_id == subject_id)
    if trace_id:
        stmt = stmt.where(c.trace_id == trace_id)
    if since:
        stmt = stmt.where(c.occurred_at >= since)
    stmt = stmt.order_by(c.tenant_seq.desc()).limit(limit)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for row in rows:  # what the entry says beyond who did what: its details
        body = json.loads(row.pop("body"))
        row["details"] = (body.get("payload") or body).get("details", {})
    return rows


def count(engine: Engine, tenant_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(audit_events.c.tenant_id == tenant_id)).scalar_one()


def verify_tenant(engine: Engine, tenant_id: str) -> Verification:
    c = audit_events.c
    with engine.connect() as conn:
        head = conn.execute(
            select(chain_heads.c.tenant_seq, chain_heads.c.hash).where(chain_heads.c.tenant_id == tenant_id)
        ).first()
        rows = conn.execute(
            select(c.tenant_seq, c.body, c.prev_hash, c.hash)
            .where(c.tenant_id == tenant_id)
            .order_by(c.tenant_seq)
        )
        return verify(
            (ChainEntry(r.tenant_seq, r.body, r.prev_hash, r.hash) for r in rows),
            head.hash if head else None,
            head.tenant_seq if head else None,
        )


def hash_at(engine: Engine, tenant_id: str, tenant_seq: int) -> str | None:
    c = audit_events.c
    with engine.connect() as conn:
        return conn.execute(
            select(c.hash).where(c.tenant_id == tenant_id, c.tenant_seq == tenant_seq)
        ).scalar()
