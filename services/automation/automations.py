"""Automations from resolutions: when a ticket resolves and the platform's runs on it
succeeded, a draft automation for that tenant (its trigger, its steps with parameters bound to
ticket fields instead of the literal values, the source ticket and runs). A draft never runs;
it becomes a version only when an approver who is not its author approves it with a reason.
Versions never change once written; approving an earlier version again rolls back to it.

`draft_from_runs` and `diff` are pure; `Automations` keeps the ticket context it needs from
tickets.events.v1 and tickets.triaged.v1 and writes drafts (with their audit) in one
transaction, once per source ticket.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from sqlalchemy import Engine, insert, select, update

from libs.common.audit import audit_event
from libs.common.events import Envelope, TicketEvent, TicketTriaged, utcnow
from libs.common.outbox import OutboxRelay, stage
from services.automation.tables import (
    automation_approvals,
    automation_versions,
    automations,
    outbox,
    runs,
    ticket_context,
)

# Ticket fields a parameter may be bound to, and the placeholder written instead of the value.
BINDINGS = {"requester": "{ticket.requester}", "device": "{ticket.device}"}
DEFAULT_THRESHOLD = 0.8


def draft_from_runs(context: dict[str, Any], ran: list[dict[str, Any]]) -> dict[str, Any]:
    """The draft's trigger and steps: every step of the ticket's succeeded runs in order, each
    parameter that equals a ticket field written as that field."""
    fields = {name: context.get(name) for name in BINDINGS}
    steps: list[dict[str, Any]] = []
    for run in ran:
        for step in run["steps"]:
            params = {}
            for name, value in step.get("params", {}).items():
                bound = next((BINDINGS[f] for f, v in fields.items() if v and str(value) == str(v)), None)
                params[name] = bound or value
            if {"action": step["action"], "params": params} not in steps:
                steps.append({"action": step["action"], "params": params})
    return {
        "trigger": {
            "intent": context.get("intent"),
            "category": context.get("category"),
            "example": context.get("title", ""),
            "threshold": DEFAULT_THRESHOLD,
        },
        "steps": steps,
        "preconditions": [
            f"ticket has a {f}" for f in BINDINGS if any(BINDINGS[f] in json.dumps(s) for s in steps)
        ],
    }


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """What changed, field by field (trigger, steps, preconditions), against the previous one."""
    if old is None:
        return {"created": True}
    out: dict[str, Any] = {}
    for key in ("trigger", "steps", "preconditions"):
        if old.get(key) != new.get(key):
            out[key] = {"before": old.get(key), "after": new.get(key)}
    return out


def _row(row: Any) -> dict[str, Any]:
    out = dict(row)
    for k in ("trigger", "steps", "preconditions", "source", "diff"):
        if k in out and isinstance(out[k], str):
            out[k] = json.loads(out[k])
    return out


class Automations:
    def __init__(self, engine: Engine, relay: OutboxRelay | Any, namespace: str = "") -> None:
        self.engine = engine
        self.relay = relay
        self.namespace = namespace

    async def handle(self, event: Envelope, _record: Any = None) -> None:
        if isinstance(event, TicketTriaged):
            p = event.payload
            await asyncio.to_thread(
                self._context, event.tenant_id, p.ticket_id, category=p.category.label, intent=p.intent.label
            )
        elif isinstance(event, TicketEvent):
            t = event.payload.ticket
            await asyncio.to_thread(
                self._context,
                event.tenant_id,
                t.ticket_id,
                title=t.title,
                requester=t.requester,
                device=t.devices[0] if t.devices else None,
            )
            if event.payload.kind == "resolved":
                if await asyncio.to_thread(self.draft_for, event.tenant_id, t.ticket_id, str(event.event_id)):
                    self.relay.wake()

    def _context(self, tenant: str, ticket_id: str, **values: Any) -> None:
        values = {k: v for k, v in values.items() if v is not None}
        with self.engine.begin() as conn:
            done = conn.execute(
                update(ticket_context)
                .where(ticket_context.c.tenant_id == tenant, ticket_context.c.ticket_id == ticket_id)
                .values(**values, updated_at=utcnow())
            ).rowcount
            if not done:
                conn.execute(
                    insert(ticket_context).values(
                        tenant_id=tenant,
                        ticket_id=ticket_id,
                        title=values.pop("title", ""),
                        **values,
                        updated_at=utcnow(),
                    )
                )

    def draft_for(self, tenant: str, ticket_id: str, cause: str) -> str | None:
        """A draft from the ticket's succeeded runs (none without one); once per ticket."""
        with self.engine.begin() as conn:
            known = conn.execute(
                select(automations.c.automation_id).where(
                    automations.c.tenant_id == tenant, automations.c.source_ticket_id == ticket_id
                )
            ).first()
            if known is not None:
                return None
            ran = [
                {**dict(r._mapping), "steps": json.loads(r.steps)}
                for r in conn.execute(
                    select(runs.c.run_id, runs.c.steps, runs.c.requested_by)
                    .where(
                        runs.c.tenant_id == tenant,
                        runs.c.ticket_id == ticket_id,
                        runs.c.status == "succeeded",
                        runs.c.dry_run.is_(False),
                    )
                    .order_by(runs.c.created_at)
                )
            ]
            if not ran:
                return None
            ctx = (
                conn.execute(
                    select(ticket_context).where(
                        ticket_context.c.tenant_id == tenant, ticket_context.c.ticket_id == ticket_id
                    )
                )
                .mappings()
                .first()
            )
            draft = draft_from_runs(dict(ctx) if ctx else {}, ran)
            automation_id = str(uuid.uuid4())
            author = ran[-1]["requested_by"]
            actions = ", ".join(s["action"] for s in draft["steps"])
            name = f"{draft['trigger']['intent'] or 'resolution'}: {actions}"
            conn.execute(
                insert(automations).values(
                    automation_id=automation_id,
                    tenant_id=tenant,
                    name=name[:500],
                    status="draft",
                    current_version=None,
                    source_ticket_id=ticket_id,
                    created_by=author,
                    created_at=utcnow(),
                )
            )
            source = {"kind": "resolution", "ticket_id": ticket_id, "run_ids": [r["run_id"] for r in ran]}
            conn.execute(
                insert(automation_versions).values(
                    automation_id=automation_id,
                    version=1,
                    tenant_id=tenant,
                    trigger=json.dumps(draft["trigger"]),
                    steps=json.dumps(draft["steps"]),
                    preconditions=json.dumps(draft["preconditions"]),
                    source=json.dumps(source),
                    diff=json.dumps(diff(None, draft)),
                    author=author,
                    created_at=utcnow(),
                )
            )
            audit = audit_event(
                service="automation",
                tenant_id=tenant,
                actor="service:automation",
                action="automation.draft.created",
                subject_kind="automation",
                subject_id=automation_id,
                cause_id=cause,
                details={"ticket_id": ticket_id, "author": author, "steps": draft["steps"], "source": source},
            )
            stage(conn, outbox, [audit], self.namespace)
            return automation_id

    # --- reading and approving --------------------------------------------------------------------

    def get(self, tenant: str, automation_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(automations).where(
                        automations.c.tenant_id == tenant, automations.c.automation_id == automation_id
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            versions = [
                _row(v)
                for v in conn.execute(
                    select(automation_versions)
                    .where(automation_versions.c.automation_id == automation_id)
                    .order_by(automation_versions.c.version)
                ).mappings()
            ]
            approvals = [
                dict(a)
                for a in conn.execute(
                    select(automation_approvals)
                    .where(automation_approvals.c.automation_id == automation_id)
                    .order_by(automation_approvals.c.approved_at)
                ).mappings()
            ]
        return {**dict(row), "versions": versions, "approvals": approvals}

    def list(self, tenant: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(automations)
                    .where(automations.c.tenant_id == tenant)
                    .order_by(automations.c.created_at)
                ).mappings()
            ]

    def approve(
        self, tenant: str, automation_id: str, version: int, approver: str, reason: str
    ) -> dict[str, Any]:
        """Make `version` current. Raises LookupError (no such version), PermissionError (the
        approver wrote that version) or ValueError (retired)."""
        with self.engine.begin() as conn:
            row = (
                conn.execute(
                    select(automations)
                    .where(automations.c.tenant_id == tenant, automations.c.automation_id == automation_id)
                    .with_for_update()
                )
                .mappings()
                .first()
            )
            found = conn.execute(
                select(automation_versions.c.author).where(
                    automation_versions.c.automation_id == automation_id,
                    automation_versions.c.version == version,
                    automation_versions.c.tenant_id == tenant,
                )
            ).first()
            if row is None or found is None:
                raise LookupError(f"no version {version} of automation {automation_id} for tenant {tenant}")
            if row["status"] == "retired":
                raise ValueError("a retired automation is never approved again")
            if found.author == approver:
                raise PermissionError("the author of a version may not approve it; another approver must")
            rollback = row["current_version"] is not None and version < row["current_version"]
            conn.execute(
                update(automations)
                .where(automations.c.automation_id == automation_id)
                .values(
                    current_version=version, status="active" if row["status"] == "draft" else row["status"]
                )
            )
            conn.execute(
                insert(automation_approvals).values(
                    approval_id=str(uuid.uuid4()),
                    automation_id=automation_id,
                    tenant_id=tenant,
                    version=version,
                    approver=approver,
                    reason=reason,
                    approved_at=utcnow(),
                )
            )
            audit = audit_event(
                service="automation",
                tenant_id=tenant,
                actor=approver,
                action="automation.version.rolled_back" if rollback else "automation.version.approved",
                subject_kind="automation",
                subject_id=automation_id,
                cause_id=f"{automation_id}:v{version}:{uuid.uuid4()}",
                details={"version": version, "reason": reason, "previous": row["current_version"]},
            )
            stage(conn, outbox, [audit], self.namespace)
        self.relay.wake()
        got = self.get(tenant, automation_id)
        assert got is not None
        return got
