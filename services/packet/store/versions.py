"""Packet versions and their deliveries (the PSA note of each version): a version and its
delivery are written in one transaction with the version's events (the outbox); deliveries
are taken under a lease and finished with their audit events.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select, tuple_

from libs.common.db import reading, writing
from libs.common.events import Envelope, utcnow
from libs.common.outbox import stage
from services.packet.store import leases
from services.packet.tables import deliveries, outbox, packets

NO_TARGET = "no PSA target configured for the tenant: the note is posted once one is (PUT /v1/psa)"
UNREADABLE_TARGET = (
    "the tenant's stored PSA credentials cannot be decrypted with this MSP_SECRETS_KEY (another key, "
    "or altered): the note is posted once the target is set again (PUT /v1/psa)"
)


def list_packets(engine: Engine, tenant_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
    """A tenant's packets, the most recently changed first: each with its latest version."""
    latest = (
        select(
            packets.c.packet_id,
            packets.c.ticket_id,
            func.max(packets.c.version).label("version"),
            func.min(packets.c.created_at).label("created_at"),
            func.max(packets.c.created_at).label("updated_at"),
        )
        .where(packets.c.tenant_id == tenant_id)
        .group_by(packets.c.packet_id, packets.c.ticket_id)
        .order_by(func.max(packets.c.created_at).desc(), packets.c.packet_id)
        .limit(limit)
        .offset(offset)
    )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(latest).mappings()]


def latest_packet(bind: Engine | Connection, tenant_id: str, ticket_id: str) -> dict[str, Any] | None:
    with reading(bind) as conn:
        row = (
            conn.execute(
                select(packets)
                .where(packets.c.tenant_id == tenant_id, packets.c.ticket_id == ticket_id)
                .order_by(packets.c.version.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def save_packet(
    bind: Engine | Connection,
    *,
    tenant_id: str,
    ticket_id: str,
    packet_id: uuid.UUID,
    version: int,
    content_hash: str,
    payload: str,
    cause_event_id: str,
    trigger_at: datetime,
    deliver: bool,
    events: list[Envelope] = (),  # type: ignore[assignment]
    namespace: str = "",
    waiting_reason: str = NO_TARGET,
) -> None:
    """The packet version and its delivery, in one transaction (the outbox: a crash never
    leaves a version without its delivery). Without a usable PSA target the delivery waits,
    visibly (`waiting_reason`), until one is set."""
    now = utcnow()
    with writing(bind) as conn:
        conn.execute(
            packets.insert().values(
                packet_id=str(packet_id),
                version=version,
                tenant_id=tenant_id,
                ticket_id=ticket_id,
                content_hash=content_hash,
                payload=payload,
                cause_event_id=cause_event_id,
                trigger_at=trigger_at,
                created_at=now,
            )
        )
        conn.execute(
            deliveries.insert().values(
                packet_id=str(packet_id),
                version=version,
                tenant_id=tenant_id,
                status="pending" if deliver else "waiting",
                attempts=0,
                next_at=now,
                last_error=None if deliver else waiting_reason,
            )
        )
        # The version's event and its audit go out through the outbox: with the version, or not at all.
        stage(conn, outbox, list(events), namespace)


def packet_versions(engine: Engine, tenant_id: str, packet_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                packets,
                deliveries.c.status,
                deliveries.c.attempts,
                deliveries.c.posted_at,
                deliveries.c.last_error,
            )
            .select_from(
                packets.outerjoin(
                    deliveries,
                    and_(
                        deliveries.c.packet_id == packets.c.packet_id,
                        deliveries.c.version == packets.c.version,
                    ),
                )
            )
            .where(packets.c.tenant_id == tenant_id, packets.c.packet_id == packet_id)
            .order_by(packets.c.version)
        ).mappings()
        return [dict(r) for r in rows]


def waiting_notes(engine: Engine, tenant_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    deliveries.c.tenant_id == tenant_id, deliveries.c.status == "waiting"
                )
            ).scalar_one()
        )


def claim_deliveries(bind: Engine | Connection, limit: int, lease_s: float) -> list[dict[str, Any]]:
    """Take the due deliveries (see `leases.claim_due`) with their versions' tenant, payload
    and trigger time, in one transaction."""
    with writing(bind) as conn:
        due = leases.claim_due(conn, deliveries, ("packet_id", "version"), limit, lease_s)
        if not due:
            return []
        found = {
            (r.packet_id, r.version): r
            for r in conn.execute(
                select(packets.c.packet_id, packets.c.version, packets.c.payload, packets.c.trigger_at).where(
                    tuple_(packets.c.packet_id, packets.c.version).in_(
                        [(d["packet_id"], d["version"]) for d in due]
                    )
                )
            )
        }
    for d in due:
        version = found.get((d["packet_id"], d["version"]))
        d["payload"] = version.payload if version else None
        d["trigger_at"] = version.trigger_at if version else None
    return due


def finish_delivery(
    engine: Engine,
    packet_id: str,
    version: int,
    *,
    status: str,
    attempts: int,
    next_at: datetime | None = None,
    error: str | None = None,
    remote_id: str | None = None,
    events: list[Envelope] = (),  # type: ignore[assignment]  # an empty default that is never mutated
    namespace: str = "",
) -> None:
    leases.finish(
        engine,
        deliveries,
        {"packet_id": packet_id, "version": version},
        status=status,
        attempts=attempts,
        next_at=next_at,
        error=error,
        remote_id=remote_id,
        events=events,
        namespace=namespace,
    )
