"""The other writes into a tenant's PSA (notes automation steps ask for, categories set in
`auto` rollout): queued once by their key, taken under a lease, finished with their events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from libs.common.events import Envelope, utcnow
from services.packet.store import leases
from services.packet.store.versions import NO_TARGET
from services.packet.tables import psa_writes


def add_psa_write(
    engine: Engine, row: dict[str, Any], *, has_target: bool, waiting_reason: str = NO_TARGET
) -> bool:
    """Queue a write (once: by its key); False when it was already queued. Without a usable
    PSA target it waits (`waiting_reason`) until one is set."""
    with engine.begin() as conn:
        known = conn.execute(
            select(psa_writes.c.write_key).where(psa_writes.c.write_key == row["write_key"])
        ).first()
        if known is not None:
            return False
        conn.execute(
            psa_writes.insert().values(
                **row,
                status="pending" if has_target else "waiting",
                attempts=0,
                next_at=utcnow(),
                last_error=None if has_target else waiting_reason,
            )
        )
        return True


def claim_psa_writes(engine: Engine, limit: int, lease_s: float) -> list[dict[str, Any]]:
    """Take the due writes (see `leases.claim_due`)."""
    return leases.claim_due(engine, psa_writes, ("write_key",), limit, lease_s)


def finish_psa_write(
    engine: Engine,
    key: str,
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
        psa_writes,
        {"write_key": key},
        status=status,
        attempts=attempts,
        next_at=next_at,
        error=error,
        remote_id=remote_id,
        events=events,
        namespace=namespace,
    )


def psa_writes_of(engine: Engine, tenant_id: str, ticket_id: str, kind: str = "note") -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(psa_writes).where(
                psa_writes.c.tenant_id == tenant_id,
                psa_writes.c.ticket_id == ticket_id,
                psa_writes.c.kind == kind,
            )
        ).mappings()
        return [dict(r) for r in rows]
