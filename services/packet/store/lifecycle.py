"""The ticket lifecycle behind the SLA figures: every ticket event once, with the PSA's time.

Time to escalate runs from a ticket's first event to its first escalation; time to resolve
after escalation from that escalation to the first resolution (`resolved`, or `closed`
without one) at or after it, split by whether the ticket had a packet when the resolution
arrived. The reopen rate is the share of resolved tickets that were reopened. All are
computed from the rows, so a redelivered event (the same event id) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import fmean
from typing import Any

from sqlalchemy import Connection, Engine, exists, func, select

from libs.common.db import writing
from libs.common.inbox import insert_ignore
from services.packet.tables import lifecycle, packets

RESOLVING = ("resolved", "closed")
FINISHED = ("succeeded", "failed", "partial")  # the outcomes that end an automation run


def as_utc(at: datetime) -> datetime:
    """A stored or given time in UTC (SQLite hands back times without their zone: UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


@dataclass(frozen=True)
class TicketFigures:
    first_at: datetime
    escalated_at: datetime | None
    resolved_at: datetime | None  # the first resolution at or after the first escalation
    resolved_with_packet: bool
    first_resolved_at: datetime | None  # the first resolution of any kind, escalated or not
    resolutions: int
    reopens: int
    marked_resolved: bool  # it has a `resolved` event (then `closed` is not a resolution of its own)

    def resolves(self, kind: str) -> bool:
        """Whether an event of this kind counts as a resolution of this ticket."""
        return kind == "resolved" or (kind == "closed" and not self.marked_resolved)

    @property
    def time_to_escalate_s(self) -> float | None:
        return None if self.escalated_at is None else (self.escalated_at - self.first_at).total_seconds()

    @property
    def time_to_resolve_s(self) -> float | None:
        """From the first event to the first resolution (None while unresolved)."""
        return (
            None
            if self.first_resolved_at is None
            else (self.first_resolved_at - self.first_at).total_seconds()
        )

    @property
    def time_to_resolve_after_escalation_s(self) -> float | None:
        if self.escalated_at is None or self.resolved_at is None:
            return None
        return (self.resolved_at - self.escalated_at).total_seconds()


def figures(rows: Iterable[tuple[str, datetime, bool]]) -> TicketFigures:
    """One ticket's figures from its events (kind, time, had a packet), in any order."""
    ordered = sorted((as_utc(at), kind, bool(packet)) for kind, at, packet in rows)
    escalated_at = next((at for at, kind, _ in ordered if kind == "escalated"), None)
    has_resolved = any(kind == "resolved" for _, kind, _ in ordered)
    # `closed` counts as a resolution only for a ticket never marked resolved (a PSA sends both).
    resolving = ("resolved",) if has_resolved else RESOLVING
    resolution = None
    if escalated_at is not None:
        after = ((at, p) for at, kind, p in ordered if kind in resolving and at >= escalated_at)
        resolution = next(after, None)
    return TicketFigures(
        first_at=ordered[0][0],
        escalated_at=escalated_at,
        resolved_at=resolution[0] if resolution else None,
        resolved_with_packet=bool(resolution and resolution[1]),
        first_resolved_at=next((at for at, kind, _ in ordered if kind in resolving), None),
        resolutions=sum(1 for _, kind, _ in ordered if kind in resolving),
        reopens=sum(1 for _, kind, _ in ordered if kind == "reopened"),
        marked_resolved=has_resolved,
    )


def record(
    bind: Engine | Connection, tenant_id: str, ticket_id: str, event_id: str, kind: str, at: datetime
) -> TicketFigures | None:
    """Keep one ticket event; the ticket's figures with it, or None when it was already kept
    (a redelivery)."""
    with writing(bind) as conn:
        with_packet = conn.execute(
            select(exists().where(packets.c.tenant_id == tenant_id, packets.c.ticket_id == ticket_id))
        ).scalar_one()
        # RETURNING, not rowcount: PostgreSQL's driver reports no row count for an INSERT
        # that may do nothing on conflict.
        inserted = conn.execute(
            insert_ignore(conn, lifecycle)
            .returning(lifecycle.c.event_id)
            .values(
                event_id=event_id,
                tenant_id=tenant_id,
                ticket_id=ticket_id,
                kind=kind,
                at=as_utc(at),
                with_packet=bool(with_packet),
            )
        ).first()
        if inserted is None:
            return None
        rows = conn.execute(
            select(lifecycle.c.kind, lifecycle.c.at, lifecycle.c.with_packet).where(
                lifecycle.c.tenant_id == tenant_id, lifecycle.c.ticket_id == ticket_id
            )
        ).all()
    return figures((r[0], r[1], r[2]) for r in rows)


def _mean(values: Sequence[float]) -> float | None:
    return round(fmean(values), 1) if values else None


def automation_runs(engine: Engine, tenant_id: str, since: datetime, until: datetime) -> dict[str, int]:
    """Automation runs that finished in [since, until), by outcome (as the results arrived)."""
    from services.packet.tables import actions

    a = actions.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(a.outcome, func.count())
            .where(
                a.tenant_id == tenant_id,
                a.outcome.in_(FINISHED),
                a.updated_at >= as_utc(since),
                a.updated_at < as_utc(until),
            )
            .group_by(a.outcome)
        ).all()
    return {outcome: n for outcome, n in rows}


def first_seen(tenant_id: str, since: datetime, until: datetime) -> Any:
    """The ids of the tenant's tickets whose first event falls in [since, until) (a subquery)."""
    col = lifecycle.c
    return (
        select(col.ticket_id)
        .where(col.tenant_id == tenant_id)
        .group_by(col.ticket_id)
        .having(func.min(col.at) >= as_utc(since), func.min(col.at) < as_utc(until))
    )


def tickets_first_seen(
    engine: Engine, tenant_id: str, since: datetime, until: datetime
) -> dict[str, TicketFigures]:
    """Each ticket first seen in [since, until), with its figures."""
    col = lifecycle.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(col.ticket_id, col.kind, col.at, col.with_packet).where(
                col.tenant_id == tenant_id, col.ticket_id.in_(first_seen(tenant_id, since, until))
            )
        ).all()
    by_ticket: dict[str, list[tuple[str, datetime, bool]]] = {}
    for ticket_id, kind, at, packet in rows:
        by_ticket.setdefault(ticket_id, []).append((kind, at, packet))
    return {ticket_id: figures(events) for ticket_id, events in by_ticket.items()}


def report(engine: Engine, tenant_id: str, since: datetime, until: datetime) -> dict[str, Any]:
    """The tenant's SLA figures for the tickets first seen in [since, until)."""
    return summarise(tenant_id, since, until, tickets_first_seen(engine, tenant_id, since, until).values())


def summarise(
    tenant_id: str, since: datetime, until: datetime, tickets: Iterable[TicketFigures]
) -> dict[str, Any]:
    """The SLA figures of these tickets (those first seen in [since, until))."""
    since, until, tickets = as_utc(since), as_utc(until), list(tickets)
    escalate = [t for f in tickets if (t := f.time_to_escalate_s) is not None]
    resolve = [
        (t, f.resolved_with_packet)
        for f in tickets
        if (t := f.time_to_resolve_after_escalation_s) is not None
    ]
    with_packet = [t for t, packet in resolve if packet]
    without = [t for t, packet in resolve if not packet]
    resolved = [f for f in tickets if f.resolutions]
    return {
        "tenant_id": tenant_id,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "tickets": len(tickets),
        "escalated": len(escalate),
        "mean_time_to_escalate_s": _mean(escalate),
        "resolved_after_escalation": {
            "with_packet": {"tickets": len(with_packet), "mean_s": _mean(with_packet)},
            "without_packet": {"tickets": len(without), "mean_s": _mean(without)},
        },
        "resolved": len(resolved),
        "reopened": sum(1 for f in resolved if f.reopens),
        "reopen_rate": round(sum(1 for f in resolved if f.reopens) / len(resolved), 4) if resolved else None,
    }
