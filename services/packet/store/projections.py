"""What the service knows from the topics it consumes, per tenant: each ticket (snapshot,
notes, escalations), the latest revision of each signal with its member alerts, the latest
triage result, and the platform actions run on a ticket with their results.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from libs.common.db import reading, upsert, writing
from libs.common.events import TicketNote, TicketSnapshot, utcnow
from services.packet.builder import touches
from services.packet.known import KnownEscalation, KnownSignal, KnownTicket
from services.packet.store import dumps, when
from services.packet.tables import actions, signals, tickets, triage


def context(
    bind: Engine | Connection,
    tenant_id: str,
    ticket_id: str,
    devices: list[str],
    site: str | None,
    since: datetime,
    until: datetime,
) -> tuple[list[KnownSignal], dict[str, Any] | None, list[dict[str, Any]]]:
    """What a packet version is built from besides the ticket, read on one connection: the
    signals around the ticket, its triage result, and the actions run on it."""
    with reading(bind) as conn:
        return (
            signals_around(conn, tenant_id, devices, site, since, until),
            get_triage(conn, tenant_id, ticket_id),
            runs_on(conn, tenant_id, ticket_id),
        )


def _ticket(row: Any) -> KnownTicket:
    return KnownTicket(
        ticket_id=row["ticket_id"],
        snapshot=TicketSnapshot.model_validate_json(row["snapshot"]),
        notes=[TicketNote.model_validate(n) for n in json.loads(row["notes"])],
        escalations=[KnownEscalation.model_validate(e) for e in json.loads(row["escalations"])],
        escalated=row["escalated"],
        closed=row["closed"],
    )


def get_ticket(bind: Engine | Connection, tenant_id: str, ticket_id: str) -> KnownTicket | None:
    with reading(bind) as conn:
        query = select(tickets).where(tickets.c.tenant_id == tenant_id, tickets.c.ticket_id == ticket_id)
        row = conn.execute(query).mappings().first()
    return None if row is None else _ticket(row)


def save_ticket(bind: Engine | Connection, tenant_id: str, ticket: KnownTicket) -> None:
    doc = ticket.model_dump(mode="json")
    row = {
        "tenant_id": tenant_id,
        "ticket_id": ticket.ticket_id,
        "snapshot": dumps(doc["snapshot"]),
        "notes": dumps(doc["notes"]),
        "escalations": dumps(doc["escalations"]),
        "escalated": ticket.escalated,
        "closed": ticket.closed,
        "updated_at": utcnow(),
    }
    with writing(bind) as conn:
        conn.execute(upsert(conn, tickets, ["tenant_id", "ticket_id"]), [row])


def escalated_tickets(engine: Engine, tenant_id: str) -> list[KnownTicket]:
    """The tenant's escalated tickets still open (a signal change may concern them)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(tickets).where(
                tickets.c.tenant_id == tenant_id, tickets.c.escalated.is_(True), tickets.c.closed.is_(False)
            )
        ).mappings()
        return [_ticket(r) for r in rows]


def apply_signal(engine: Engine, tenant_id: str, payload: dict[str, Any]) -> bool:
    """Keep the latest revision and every member alert id seen; False for an old revision."""
    sid = str(payload["signal_id"])
    with engine.begin() as conn:
        known = conn.execute(
            select(signals.c.revision, signals.c.alert_ids).where(
                signals.c.tenant_id == tenant_id, signals.c.signal_id == sid
            )
        ).first()
        if known is not None and known[0] >= payload["revision"]:
            return False
        members = json.loads(known[1]) if known is not None else []
        for a in [*payload.get("added_alert_ids", []), *payload.get("member_alert_ids", [])]:
            if str(a) not in members:
                members.append(str(a))
        row = {
            "tenant_id": tenant_id,
            "signal_id": sid,
            "revision": payload["revision"],
            "payload": dumps(payload),
            "alert_ids": dumps(members[-200:]),
            "last_seen": when(payload["last_seen"]),
        }
        conn.execute(upsert(engine, signals, ["tenant_id", "signal_id"]), [row])
    return True


def signals_around(
    bind: Engine | Connection,
    tenant_id: str,
    devices: list[str],
    site: str | None,
    since: datetime,
    until: datetime,
) -> list[KnownSignal]:
    """The tenant's signals on the devices or site, seen within [since, until]."""
    if not devices and not site:
        return []
    out = []
    with reading(bind) as conn:
        rows = conn.execute(
            select(signals.c.payload, signals.c.alert_ids)
            .where(signals.c.tenant_id == tenant_id, signals.c.last_seen >= since)
            .order_by(signals.c.last_seen.desc())
            .limit(2000)
        )
        for payload, alert_ids in rows:
            p = json.loads(payload)
            if datetime.fromisoformat(p["first_seen"]) > until:
                continue
            if touches(devices, site, p.get("devices", []), p.get("sites", [])):
                # Only the signals that concern the ticket are validated into their type.
                out.append(KnownSignal.model_validate({**p, "alert_ids": json.loads(alert_ids)}))
    return out


def save_triage(engine: Engine, tenant_id: str, ticket_id: str, payload: dict[str, Any]) -> None:
    row = {"tenant_id": tenant_id, "ticket_id": ticket_id, "payload": dumps(payload), "updated_at": utcnow()}
    with engine.begin() as conn:
        conn.execute(upsert(engine, triage, ["tenant_id", "ticket_id"]), [row])


def drop_triage(engine: Engine, tenant_id: str, ticket_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(triage).where(triage.c.tenant_id == tenant_id, triage.c.ticket_id == ticket_id))


def get_triage(bind: Engine | Connection, tenant_id: str, ticket_id: str) -> dict[str, Any] | None:
    with reading(bind) as conn:
        row = conn.execute(
            select(triage.c.payload).where(triage.c.tenant_id == tenant_id, triage.c.ticket_id == ticket_id)
        ).scalar()
    return json.loads(row) if row else None


def record_run(
    engine: Engine, tenant_id: str, run_id: str, ticket_id: str | None, steps: list[dict[str, Any]]
) -> None:
    with engine.begin() as conn:
        known = conn.execute(
            select(actions.c.run_id).where(actions.c.tenant_id == tenant_id, actions.c.run_id == run_id)
        ).first()
        if known is None:
            conn.execute(
                actions.insert().values(
                    tenant_id=tenant_id,
                    run_id=run_id,
                    ticket_id=ticket_id,
                    steps=dumps(steps),
                    results="[]",
                    updated_at=utcnow(),
                )
            )
        else:  # the result came first
            conn.execute(
                update(actions)
                .where(actions.c.tenant_id == tenant_id, actions.c.run_id == run_id)
                .values(ticket_id=ticket_id, steps=dumps(steps))
            )


def record_result(
    engine: Engine,
    tenant_id: str,
    run_id: str,
    outcome: str,
    results: list[dict[str, Any]],
    logs_url: str | None,
) -> str | None:
    """Store a run's result; returns the ticket it ran on, when known."""
    with engine.begin() as conn:
        row = conn.execute(
            select(actions.c.ticket_id).where(actions.c.tenant_id == tenant_id, actions.c.run_id == run_id)
        ).first()
        values = {"outcome": outcome, "results": dumps(results), "logs_url": logs_url, "updated_at": utcnow()}
        if row is None:
            conn.execute(
                actions.insert().values(
                    tenant_id=tenant_id, run_id=run_id, ticket_id=None, steps="[]", **values
                )
            )
            return None
        conn.execute(
            update(actions)
            .where(actions.c.tenant_id == tenant_id, actions.c.run_id == run_id)
            .values(**values)
        )
        return row[0]


def runs_on(bind: Engine | Connection, tenant_id: str, ticket_id: str) -> list[dict[str, Any]]:
    with reading(bind) as conn:
        rows = conn.execute(
            select(actions)
            .where(actions.c.tenant_id == tenant_id, actions.c.ticket_id == ticket_id)
            .order_by(actions.c.updated_at)
        ).mappings()
        return [
            {**dict(r), "steps": json.loads(r["steps"]), "results": json.loads(r["results"])} for r in rows
        ]
