"""What a customer report is drafted from, read from the service's own projections, and the
drafts themselves. Every figure a report shows is computed here by a query that the report
names (`MonthData.queries`), so a reader can trace a number back to where it came from."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from libs.common.events import utcnow
from services.packet.store import lifecycle as lifecycle_store
from services.packet.tables import actions, reports, signals, tickets

REPORT_NAMESPACE = uuid.UUID("5b1c8f9e-2f4a-4c51-9d0e-7a3e6b2c1d40")


def month_window(month: str) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) in UTC for "YYYY-MM"."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
        if (start.year, start.month) == (9999, 12):
            end = datetime.max.replace(tzinfo=UTC)  # the calendar's end: that month has no next
        else:
            following = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
            end = start.replace(year=following[0], month=following[1])
    except ValueError:
        raise ValueError(f"month {month!r}: give a month from 0001-01 to 9999-12 as YYYY-MM") from None
    return start, end


@dataclass
class MonthData:
    tenant_id: str
    month: str
    sla: dict[str, Any]
    # ticket id -> (category, title, figures)
    tickets: dict[str, tuple[str, str, lifecycle_store.TicketFigures]]
    signals: list[dict[str, Any]]
    runs: list[dict[str, Any]]  # finished runs: run_id, ticket_id, outcome, duration_s
    queries: dict[str, str] = field(default_factory=dict)


def gather(engine: Engine, tenant_id: str, month: str) -> MonthData:
    start, end = month_window(month)
    figures = lifecycle_store.tickets_first_seen(engine, tenant_id, start, end)
    sla = lifecycle_store.summarise(tenant_id, start, end, figures.values())
    with engine.connect() as conn:
        snapshots = {
            r.ticket_id: json.loads(r.snapshot)
            for r in conn.execute(
                select(tickets.c.ticket_id, tickets.c.snapshot).where(
                    tickets.c.tenant_id == tenant_id,
                    tickets.c.ticket_id.in_(lifecycle_store.first_seen(tenant_id, start, end)),
                )
            )
        }
        signal_rows = conn.execute(
            select(signals.c.payload).where(
                signals.c.tenant_id == tenant_id, signals.c.last_seen >= start, signals.c.last_seen < end
            )
        ).all()
        run_rows = conn.execute(
            select(actions.c.run_id, actions.c.ticket_id, actions.c.outcome, actions.c.results).where(
                actions.c.tenant_id == tenant_id,
                actions.c.outcome.in_(lifecycle_store.FINISHED),
                actions.c.updated_at >= start,
                actions.c.updated_at < end,
            )
        ).all()
    month_tickets = {}
    for ticket_id, ticket_figures in figures.items():
        snap = snapshots.get(ticket_id, {})
        month_tickets[ticket_id] = (
            snap.get("category") or "uncategorised",
            snap.get("title") or ticket_id,
            ticket_figures,
        )
    runs = []
    for r in run_rows:
        steps = json.loads(r.results)
        took = sum((s.get("duration_ms") or 0.0) for s in steps) / 1000
        runs.append({"run_id": r.run_id, "ticket_id": r.ticket_id, "outcome": r.outcome, "duration_s": took})
    window = f"from {start.isoformat()} to {end.isoformat()} (exclusive)"
    return MonthData(
        tenant_id=tenant_id,
        month=month,
        sla=sla,
        tickets=month_tickets,
        signals=[json.loads(r.payload) for r in signal_rows],
        runs=runs,
        queries={
            "tickets": f"packet_lifecycle: tickets whose first event falls {window}; category from "
            "the ticket's latest PSA snapshot (packet_tickets)",
            "sla": f"GET /v1/sla?tenant_id={tenant_id}&since={start.isoformat()}&until={end.isoformat()} "
            "(packet_lifecycle, the PSA's own times)",
            "signals": f"packet_signals: signals last seen {window}",
            "runs": f"packet_actions: automation runs that finished {window}, by outcome; duration "
            "= the sum of their steps' durations",
        },
    )


def report_id(tenant_id: str, month: str) -> str:
    return str(uuid.uuid5(REPORT_NAMESPACE, f"{tenant_id}\x1f{month}"))


def save_draft(engine: Engine, tenant_id: str, month: str, content: dict[str, Any]) -> dict[str, Any] | None:
    """Store (or redraft) the month's report; None when it was already approved."""
    rid, now = report_id(tenant_id, month), utcnow()
    with engine.begin() as conn:
        row = conn.execute(
            select(reports.c.status).where(reports.c.report_id == rid).with_for_update()
        ).first()
        if row is not None and row.status == "approved":
            return None
        body = json.dumps(content)
        if row is None:
            conn.execute(
                reports.insert().values(
                    report_id=rid,
                    tenant_id=tenant_id,
                    month=month,
                    status="draft",
                    content=body,
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            conn.execute(
                reports.update().where(reports.c.report_id == rid).values(content=body, updated_at=now)
            )
    return get(engine, tenant_id, rid)


def get(engine: Engine, tenant_id: str, rid: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = (
            conn.execute(select(reports).where(reports.c.report_id == rid, reports.c.tenant_id == tenant_id))
            .mappings()
            .first()
        )
    if row is None:
        return None
    out = {k: v for k, v in row.items() if k != "content"}
    for key in ("created_at", "updated_at", "approved_at"):
        if out[key] is not None:
            out[key] = lifecycle_store.as_utc(out[key]).isoformat()
    return {**out, **json.loads(row["content"])}


def approve(
    engine: Engine, tenant_id: str, rid: str, approved_by: str
) -> tuple[dict[str, Any], float] | None:
    """Mark a draft approved; the report and its turnaround (first draft to approval, seconds),
    or None when there is no such draft (absent, or approved already)."""
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(
            select(reports.c.status, reports.c.created_at)
            .where(reports.c.report_id == rid, reports.c.tenant_id == tenant_id)
            .with_for_update()
        ).first()
        if row is None or row.status != "draft":
            return None
        conn.execute(
            reports.update()
            .where(reports.c.report_id == rid)
            .values(status="approved", approved_at=now, approved_by=approved_by, updated_at=now)
        )
    created = lifecycle_store.as_utc(row.created_at)
    report = get(engine, tenant_id, rid)
    assert report is not None
    return report, (now - created).total_seconds()
