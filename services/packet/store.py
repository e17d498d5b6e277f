"""The packet service's state: what it knows of each ticket, signal and triage result (from the
topics it consumes), the runbooks, the packets and their versions, PSA targets and deliveries,
and engineers' feedback. Every function takes the tenant explicitly.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    select,
    update,
)

from libs.common.crypto import SecretBox
from libs.common.db import upsert
from libs.common.events import Envelope, utcnow
from libs.common.llm import usage_table
from libs.common.outbox import outbox_table, stage

metadata = MetaData()
tickets = Table(
    "packet_tickets",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("ticket_id", String(1000), primary_key=True),
    Column("snapshot", Text, nullable=False),  # the latest TicketSnapshot, merged field by field
    Column("notes", Text, nullable=False),  # JSON list of notes, in arrival order
    Column("escalations", Text, nullable=False),  # JSON list of escalations with their time
    Column("escalated", Boolean, nullable=False),
    Column("closed", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_packet_tickets_open", "tenant_id", "escalated", "closed"),
)
signals = Table(
    "packet_signals",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("signal_id", String(36), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("payload", Text, nullable=False),  # the SignalPayload of that revision
    Column("alert_ids", Text, nullable=False),  # every member alert seen, JSON list
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Index("ix_packet_signals_seen", "tenant_id", "last_seen"),
)
triage = Table(
    "packet_triage",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("ticket_id", String(1000), primary_key=True),
    Column("payload", Text, nullable=False),  # the TicketTriagedPayload
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
runbooks = Table(
    "packet_runbooks",
    metadata,
    Column("scope", String(80), primary_key=True),  # "tenant:<id>" or "global"
    Column("path", String(500), primary_key=True),
    Column("title", Text, nullable=False),
    Column("url", Text),
    Column("source", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("vectors", LargeBinary, nullable=False),  # float32, one row per section
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
packets = Table(
    "packet_packets",
    metadata,
    Column("packet_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("ticket_id", String(1000), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("cause_event_id", String(36), nullable=False),
    Column("trigger_at", DateTime(timezone=True), nullable=False),  # when the causing event was ingested
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_packet_packets_ticket", "tenant_id", "ticket_id", "version"),
)
targets = Table(
    "packet_psa_targets",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("base_url", Text, nullable=False),
    Column("credentials", Text, nullable=False),  # encrypted (libs/common/crypto.py); never returned
    Column("options", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
deliveries = Table(
    "packet_deliveries",
    metadata,
    Column("packet_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    # waiting (no PSA target yet), pending, posting, posted, failed (gave up), skipped,
    # superseded (a later version of the packet was posted instead)
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("remote_id", Text),
    Column("posted_at", DateTime(timezone=True)),
    Index("ix_packet_deliveries_due", "status", "next_at"),
)
feedback = Table(
    "packet_feedback",
    metadata,
    Column("feedback_id", String(36), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("packet_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("claim", String(100)),  # "runbook/0", "summary/2"... or None for the packet as a whole
    Column("verdict", String(16)),  # useful, wrong
    Column("review_seconds", Float),
    Column("engineer", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_packet_feedback_packet", "tenant_id", "packet_id"),
)


# What the service writes into a tenant's PSA besides packet versions: the notes automation
# steps ask for (`psa.add_note`, kind "note": text is the note) and, in `auto` rollout mode, the
# category ticket triage decided (kind "category": text is the category). Keyed by the step's
# idempotency key or by (ticket, category), so a redelivery queues nothing new.
psa_writes = Table(
    "packet_psa_writes",
    metadata,
    Column("write_key", String(64), primary_key=True),
    Column("tenant_id", String(63), nullable=False),
    Column("ticket_id", String(200), nullable=False),
    Column("cause_id", String(36), nullable=False),  # the run, or the triage event
    Column("requested_by", String(200), nullable=False),
    Column("text", Text, nullable=False),
    Column("status", String(16), nullable=False),  # waiting, pending, posting, posted, failed, skipped
    Column("attempts", Integer, nullable=False),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("remote_id", Text),
    Column("posted_at", DateTime(timezone=True)),
    Column("kind", String(16), nullable=False, server_default="note"),  # note, category
    Column("details", Text),  # JSON: for a category, the decision (confidence, method)
    Index("ix_packet_psa_writes_due", "status", "next_at"),
)
outbox = outbox_table(metadata, "packet")
llm_usage = usage_table(metadata, "packet")  # the tenants' daily Claude token budgets

actions = Table(
    "packet_actions",
    metadata,
    Column("tenant_id", String(63), primary_key=True),
    Column("run_id", String(36), primary_key=True),
    Column("ticket_id", String(1000)),
    Column("steps", Text, nullable=False),  # the run's steps as requested
    Column("outcome", String(16)),  # None until its result arrives
    Column("results", Text, nullable=False),  # the steps' results
    Column("logs_url", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_packet_actions_ticket", "tenant_id", "ticket_id"),
)


def _when(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


# --- tickets ----------------------------------------------------------------------------------


def _ticket(row: Any) -> dict[str, Any]:
    return {
        "ticket_id": row["ticket_id"],
        "snapshot": json.loads(row["snapshot"]),
        "notes": json.loads(row["notes"]),
        "escalations": json.loads(row["escalations"]),
        "escalated": row["escalated"],
        "closed": row["closed"],
    }


def get_ticket(engine: Engine, tenant_id: str, ticket_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        query = select(tickets).where(tickets.c.tenant_id == tenant_id, tickets.c.ticket_id == ticket_id)
        row = conn.execute(query).mappings().first()
    return None if row is None else _ticket(row)


def save_ticket(engine: Engine, tenant_id: str, ticket: dict[str, Any]) -> None:
    row = {
        "tenant_id": tenant_id,
        "ticket_id": ticket["ticket_id"],
        "snapshot": _json(ticket["snapshot"]),
        "notes": _json(ticket["notes"]),
        "escalations": _json(ticket["escalations"]),
        "escalated": ticket["escalated"],
        "closed": ticket["closed"],
        "updated_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(upsert(engine, tickets, ["tenant_id", "ticket_id"]), [row])


def escalated_tickets(engine: Engine, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's escalated tickets still open (a signal change may concern them)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(tickets).where(
                tickets.c.tenant_id == tenant_id, tickets.c.escalated.is_(True), tickets.c.closed.is_(False)
            )
        ).mappings()
        return [_ticket(r) for r in rows]


# --- signals and triage -------------------------------------------------------------------------


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
            "payload": _json(payload),
            "alert_ids": _json(members[-200:]),
            "last_seen": _when(payload["last_seen"]),
        }
        conn.execute(upsert(engine, signals, ["tenant_id", "signal_id"]), [row])
    return True


def signals_around(
    engine: Engine, tenant_id: str, devices: list[str], site: str | None, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """The tenant's signals on the devices or site, seen within [since, until]."""
    if not devices and not site:
        return []
    wanted = set(devices)
    out = []
    with engine.connect() as conn:
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
            if wanted.intersection(p.get("devices", [])) or (site is not None and site in p.get("sites", [])):
                out.append({**p, "alert_ids": json.loads(alert_ids)})
    return out


def save_triage(engine: Engine, tenant_id: str, ticket_id: str, payload: dict[str, Any]) -> None:
    row = {"tenant_id": tenant_id, "ticket_id": ticket_id, "payload": _json(payload), "updated_at": utcnow()}
    with engine.begin() as conn:
        conn.execute(upsert(engine, triage, ["tenant_id", "ticket_id"]), [row])


def drop_triage(engine: Engine, tenant_id: str, ticket_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(triage).where(triage.c.tenant_id == tenant_id, triage.c.ticket_id == ticket_id))


def get_triage(engine: Engine, tenant_id: str, ticket_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(triage.c.payload).where(triage.c.tenant_id == tenant_id, triage.c.ticket_id == ticket_id)
        ).scalar()
    return json.loads(row) if row else None


# --- platform actions --------------------------------------------------------------------------


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
                    steps=_json(steps),
                    results="[]",
                    updated_at=utcnow(),
                )
            )
        else:  # the result came first
            conn.execute(
                update(actions)
                .where(actions.c.tenant_id == tenant_id, actions.c.run_id == run_id)
                .values(ticket_id=ticket_id, steps=_json(steps))
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
        values = {"outcome": outcome, "results": _json(results), "logs_url": logs_url, "updated_at": utcnow()}
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


def runs_on(engine: Engine, tenant_id: str, ticket_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(actions)
            .where(actions.c.tenant_id == tenant_id, actions.c.ticket_id == ticket_id)
            .order_by(actions.c.updated_at)
        ).mappings()
        return [
            {**dict(r), "steps": json.loads(r["steps"]), "results": json.loads(r["results"])} for r in rows
        ]


# --- runbooks ---------------------------------------------------------------------------------


def put_runbook(
    engine: Engine,
    scope: str,
    path: str,
    title: str,
    url: str | None,
    source: str,
    digest: str,
    vectors: np.ndarray,
) -> None:
    row = {
        "scope": scope,
        "path": path,
        "title": title,
        "url": url,
        "source": source,
        "content_hash": digest,
        "vectors": np.asarray(vectors, dtype=np.float32).tobytes(),
        "updated_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(upsert(engine, runbooks, ["scope", "path"]), [row])


def runbook_hash(engine: Engine, scope: str, path: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(runbooks.c.content_hash).where(runbooks.c.scope == scope, runbooks.c.path == path)
        ).scalar()


def delete_runbook(engine: Engine, scope: str, path: str) -> bool:
    with engine.begin() as conn:
        return bool(
            conn.execute(delete(runbooks).where(runbooks.c.scope == scope, runbooks.c.path == path)).rowcount
        )


def runbook_version(engine: Engine, scopes: list[str]) -> tuple[int, str]:
    """(count, latest change) over the scopes: changes when any of their runbooks does."""
    with engine.connect() as conn:
        n, latest = conn.execute(
            select(func.count(), func.max(runbooks.c.updated_at)).where(runbooks.c.scope.in_(scopes))
        ).one()
    return int(n), str(latest)


def load_runbooks(engine: Engine, scopes: list[str]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(runbooks).where(runbooks.c.scope.in_(scopes)).order_by(runbooks.c.scope, runbooks.c.path)
        ).mappings()
        return [dict(r) for r in rows]


def list_runbooks(engine: Engine, scope: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(runbooks.c.path, runbooks.c.title, runbooks.c.url, runbooks.c.updated_at)
            .where(runbooks.c.scope == scope)
            .order_by(runbooks.c.path)
        ).mappings()
        return [dict(r) for r in rows]


# --- packets ----------------------------------------------------------------------------------


NO_TARGET = "no PSA target configured for the tenant: the note is posted once one is (PUT /v1/psa)"


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


def latest_packet(engine: Engine, tenant_id: str, ticket_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
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
    engine: Engine,
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
) -> None:
    """The packet version and its delivery, in one transaction (the outbox: a crash never
    leaves a version without its delivery). Without a PSA target the delivery waits, visibly,
    until one is configured."""
    now = utcnow()
    with engine.begin() as conn:
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
                last_error=None if deliver else NO_TARGET,
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


# --- PSA targets and deliveries ---------------------------------------------------------------------


def set_target(
    engine: Engine,
    tenant_id: str,
    kind: str,
    base_url: str,
    credentials: dict[str, Any],
    options: dict[str, Any],
    *,
    box: SecretBox,
) -> int:
    """Set the tenant's PSA target; the notes that waited for one are released: the latest
    version of each packet is posted, its older waiting versions are superseded by it.
    Returns how many notes were released."""
    row = {
        "tenant_id": tenant_id,
        "kind": kind,
        "base_url": base_url,
        "credentials": box.seal(credentials),  # encrypted at rest
        "options": _json(options),
        "updated_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(upsert(engine, targets, ["tenant_id"]), [row])
        waiting = conn.execute(
            select(deliveries.c.packet_id, deliveries.c.version).where(
                deliveries.c.tenant_id == tenant_id, deliveries.c.status == "waiting"
            )
        ).all()
        newest: dict[str, int] = {}
        for packet_id, version in waiting:
            newest[packet_id] = max(version, newest.get(packet_id, 0))
        for packet_id, version in waiting:
            released = version == newest[packet_id]
            conn.execute(
                update(deliveries)
                .where(deliveries.c.packet_id == packet_id, deliveries.c.version == version)
                .values(
                    status="pending" if released else "superseded",
                    next_at=utcnow(),
                    last_error=None if released else "a later version of the packet was posted instead",
                )
            )
        notes = conn.execute(
            update(psa_writes)
            .where(psa_writes.c.tenant_id == tenant_id, psa_writes.c.status == "waiting")
            .values(status="pending", next_at=utcnow(), last_error=None)
        ).rowcount
    return len(newest) + notes


def waiting_notes(engine: Engine, tenant_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    deliveries.c.tenant_id == tenant_id, deliveries.c.status == "waiting"
                )
            ).scalar_one()
        )


def get_runbook(engine: Engine, scope: str, path: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(runbooks.c.title, runbooks.c.url, runbooks.c.source, runbooks.c.updated_at).where(
                    runbooks.c.scope == scope, runbooks.c.path == path
                )
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def get_target(engine: Engine, tenant_id: str, *, box: SecretBox) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(targets).where(targets.c.tenant_id == tenant_id)).mappings().first()
    if row is None:
        return None
    return {
        "kind": row["kind"],
        "base_url": row["base_url"],
        "credentials": box.open(row["credentials"]),
        "options": json.loads(row["options"]),
    }


def due_deliveries(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """Pending deliveries whose time has come, and those whose poster's lease ran out (it
    died mid-post)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries)
            .where(deliveries.c.status.in_(("pending", "posting")), deliveries.c.next_at <= utcnow())
            .order_by(deliveries.c.next_at)
            .limit(limit)
        ).mappings()
        return [dict(r) for r in rows]


def claim_delivery(engine: Engine, packet_id: str, version: int, lease_s: float) -> bool:
    """Take a due delivery for `lease_s` seconds; False when another instance took it first."""
    now = utcnow()
    with engine.begin() as conn:
        taken = conn.execute(
            update(deliveries)
            .where(
                deliveries.c.packet_id == packet_id,
                deliveries.c.version == version,
                deliveries.c.status.in_(("pending", "posting")),
                deliveries.c.next_at <= now,
            )
            .values(status="posting", next_at=now + timedelta(seconds=lease_s))
        )
        return bool(taken.rowcount)


def packet_payload(engine: Engine, packet_id: str, version: int) -> tuple[str, str, datetime] | None:
    """(tenant, payload JSON, trigger time) of one packet version."""
    with engine.connect() as conn:
        row = conn.execute(
            select(packets.c.tenant_id, packets.c.payload, packets.c.trigger_at).where(
                packets.c.packet_id == packet_id, packets.c.version == version
            )
        ).first()
    return (row[0], row[1], row[2]) if row else None


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
    events: list[Envelope] = (),  # type: ignore[assignment]
    namespace: str = "",
) -> None:
    values: dict[str, Any] = {"status": status, "attempts": attempts, "last_error": error}
    if next_at is not None:
        values["next_at"] = next_at
    if status == "posted":
        values.update(posted_at=utcnow(), remote_id=remote_id)
    with engine.begin() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.packet_id == packet_id, deliveries.c.version == version)
            .values(**values)
        )
        stage(conn, outbox, list(events), namespace)


# --- other PSA writes (step notes, categories) -------------------------------------------------


def add_psa_write(engine: Engine, row: dict[str, Any], *, has_target: bool) -> bool:
    """Queue a write (once: by its key); False when it was already queued."""
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
                last_error=None if has_target else NO_TARGET,
            )
        )
        return True


def due_psa_writes(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(psa_writes)
            .where(psa_writes.c.status.in_(("pending", "posting")), psa_writes.c.next_at <= utcnow())
            .order_by(psa_writes.c.next_at)
            .limit(limit)
        ).mappings()
        return [dict(r) for r in rows]


def claim_psa_write(engine: Engine, key: str, lease_s: float) -> bool:
    now = utcnow()
    with engine.begin() as conn:
        taken = conn.execute(
            update(psa_writes)
            .where(
                psa_writes.c.write_key == key,
                psa_writes.c.status.in_(("pending", "posting")),
                psa_writes.c.next_at <= now,
            )
            .values(status="posting", next_at=now + timedelta(seconds=lease_s))
        )
        return bool(taken.rowcount)


def finish_psa_write(
    engine: Engine,
    key: str,
    *,
    status: str,
    attempts: int,
    next_at: datetime | None = None,
    error: str | None = None,
    remote_id: str | None = None,
    events: list[Envelope] = (),  # type: ignore[assignment]
    namespace: str = "",
) -> None:
    values: dict[str, Any] = {"status": status, "attempts": attempts, "last_error": error}
    if next_at is not None:
        values["next_at"] = next_at
    if status == "posted":
        values.update(posted_at=utcnow(), remote_id=remote_id)
    with engine.begin() as conn:
        conn.execute(update(psa_writes).where(psa_writes.c.write_key == key).values(**values))
        stage(conn, outbox, list(events), namespace)


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


# --- feedback -----------------------------------------------------------------------------------


def add_feedback(engine: Engine, row: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(feedback.insert().values(**row, created_at=utcnow()))


def feedback_of(engine: Engine, tenant_id: str, packet_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                feedback.c.version,
                feedback.c.claim,
                feedback.c.verdict,
                feedback.c.review_seconds,
                feedback.c.engineer,
            )
            .where(feedback.c.tenant_id == tenant_id, feedback.c.packet_id == packet_id)
            .order_by(feedback.c.created_at)
        ).mappings()
        return [dict(r) for r in rows]
