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

import builtins
import json
import re
import statistics
import uuid
from typing import Any

from sqlalchemy import Engine, insert, select, update

from libs.common.audit import audit_event
from libs.common.events import utcnow
from libs.common.outbox import OutboxRelay, stage
from services.automation.tables import (
    automation_approvals,
    automation_versions,
    automations,
    decisions,
    failures,
    ledger,
    outbox,
    runs,
    ticket_context,
)

# Ticket fields a parameter may be bound to, and the placeholder written instead of the value.
BINDINGS = {"requester": "{ticket.requester}", "device": "{ticket.device}"}
# Cosine similarity a new ticket needs to the source ticket (intent and category must match first).
DEFAULT_THRESHOLD = 0.6


_WORD = r"\w[\w.&'-]*"


def group_pattern(text: str, group: str) -> str | None:
    r"""Where the ticket names the group, as a pattern that finds the group another ticket names
    the same way: the two words before it and the word after it, within its sentence ("add me
    to the Finance group" -> `to\s+the\s+(?P<group>...)\s+group`); an occurrence with a word
    after it is preferred. None when the text does not name it."""
    best: tuple[tuple[bool, int], str] | None = None
    for sentence in re.split(r"[.!?;:\n]+", text):
        for found in re.finditer(rf"(?<![\w-]){re.escape(group)}(?![\w-])", sentence, re.IGNORECASE):
            before = re.findall(_WORD, sentence[: found.start()])[-2:]
            after = re.findall(_WORD, sentence[found.end() :])[:1]
            if not before and not after:
                continue
            parts = [r"\b" + r"\s+".join(re.escape(w) for w in before) + r"\s+"] if before else []
            parts.append(r"(?P<group>\w[\w.&'-]*(?:\s\w[\w.&'-]*){0,3}?)")
            parts.append(r"\s+" + re.escape(after[0]) + r"\b" if after else r"(?=\s*(?:$|[,.;!?]))")
            rank = (bool(after), len(before))
            if best is None or rank > best[0]:
                best = (rank, "".join(parts))
    return best[1] if best else None


def group_in(pattern: str | None, text: str) -> str | None:
    """The group a ticket's text names, read with a trigger's `group_pattern`."""
    if not pattern:
        return None
    m = re.search(pattern, text, re.IGNORECASE)
    return m.group("group").strip() if m else None


def draft_from_runs(context: dict[str, Any], ran: list[dict[str, Any]]) -> dict[str, Any]:
    """The draft's trigger and steps: every step of the ticket's succeeded runs in order, each
    parameter that equals a ticket field written as that field, and a group the ticket's text
    names written as {ticket.group} (the trigger keeps how the text named it)."""
    fields = {name: context.get(name) for name in BINDINGS}
    text = " ".join(f"{context.get('title') or ''}. {context.get('description') or ''}".split())
    pattern: str | None = None
    steps: list[dict[str, Any]] = []
    for run in ran:
        for step in run["steps"]:
            params = {}
            for name, value in step.get("params", {}).items():
                bound = next((BINDINGS[f] for f, v in fields.items() if v and str(value) == str(v)), None)
                if bound is None and name == "group" and isinstance(value, str) and value.strip():
                    found = group_pattern(text, value)
                    if found is not None and (pattern is None or pattern == found):
                        pattern, bound = found, "{ticket.group}"
                params[name] = bound or value
            if {"action": step["action"], "params": params} not in steps:
                steps.append({"action": step["action"], "params": params})
    trigger: dict[str, Any] = {
        "intent": context.get("intent"),
        "category": context.get("category"),
        "example": ticket_text(context),
        "threshold": DEFAULT_THRESHOLD,
    }
    if pattern is not None:
        trigger["group_pattern"] = pattern
    return {
        "trigger": trigger,
        "steps": steps,
        "preconditions": [
            {"kind": "field", "field": f, "text": f"ticket has a {f}"}
            for f in [*BINDINGS, "group"]
            if any(f"{{ticket.{f}}}" in json.dumps(s) for s in steps)
        ],
    }


def ticket_text(context: dict[str, Any]) -> str:
    """What a ticket says, as triggers compare it: title and the start of the description, with
    the values an automation binds (requester, device) written as "the requester" and "the
    device", so two tickets about different people read alike (names alone move the similarity
    of otherwise identical tickets by a third)."""
    text = " ".join(f"{context.get('title') or ''}. {(context.get('description') or '')[:300]}".split())
    for name in BINDINGS:
        value = context.get(name)
        if value and len(str(value)) > 1:
            text = re.sub(re.escape(str(value)), f"the {name}", text, flags=re.IGNORECASE)
    return text


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

    def draft_for(
        self,
        tenant: str,
        ticket_id: str,
        cause: str,
        from_notes: list[dict[str, Any]] | None = None,
        author: str | None = None,
    ) -> str | None:
        """A draft from the ticket's succeeded runs or, without any, from the steps extracted
        from its notes (`from_notes`); none without either, none twice per ticket, and none
        when one of the tenant's automations already has the same trigger and steps."""
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
                    .where(*_engineer_runs(tenant, ticket_id))
                    .order_by(runs.c.created_at)
                )
            ]
            source: dict[str, Any] = {
                "kind": "resolution",
                "ticket_id": ticket_id,
                "run_ids": [r["run_id"] for r in ran],
            }
            if not ran and from_notes:
                ran = [{"run_id": None, "steps": from_notes, "requested_by": author or "unknown"}]
                source = {"kind": "notes", "ticket_id": ticket_id, "run_ids": []}
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
            if not draft["steps"] or self._same_exists(conn, tenant, draft):
                return None
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

    def undrafted_without_runs(self, tenant: str, ticket_id: str) -> bool:
        """No automation was drafted from this ticket, and the platform ran nothing on it that
        succeeded: its notes are all a draft could come from."""
        with self.engine.connect() as conn:
            drafted = conn.execute(
                select(automations.c.automation_id).where(
                    automations.c.tenant_id == tenant, automations.c.source_ticket_id == ticket_id
                )
            ).first()
            ran = conn.execute(select(runs.c.run_id).where(*_engineer_runs(tenant, ticket_id))).first()
        return drafted is None and ran is None

    def _same_exists(self, conn: Any, tenant: str, draft: dict[str, Any]) -> bool:
        """Another of the tenant's automations (not retired) already does this for this trigger."""
        for row in conn.execute(
            select(automation_versions.c.trigger, automation_versions.c.steps)
            .join(automations, automations.c.automation_id == automation_versions.c.automation_id)
            .where(automations.c.tenant_id == tenant, automations.c.status != "retired")
        ):
            trigger = json.loads(row.trigger)
            if json.loads(row.steps) == draft["steps"] and (
                trigger.get("intent"),
                trigger.get("category"),
            ) == (
                draft["trigger"]["intent"],
                draft["trigger"]["category"],
            ):
                return True
        return False

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

    # --- versions, status and what ran ---------------------------------------------------------------

    def add_version(
        self,
        tenant: str,
        automation_id: str,
        change: dict[str, Any],
        *,
        author: str,
        source: dict[str, Any],
        cause: str,
        conn: Any = None,
    ) -> int:
        """A new version (never current until approved) with its diff against the latest one.
        Raises LookupError (no such automation) or ValueError (retired)."""
        if conn is None:
            with self.engine.begin() as c:
                number = self.add_version(
                    tenant, automation_id, change, author=author, source=source, cause=cause, conn=c
                )
            self.relay.wake()
            return number
        row = conn.execute(
            select(automations.c.status)
            .where(automations.c.tenant_id == tenant, automations.c.automation_id == automation_id)
            .with_for_update()
        ).first()
        if row is None:
            raise LookupError(f"no automation {automation_id} for tenant {tenant}")
        if row.status == "retired":
            raise ValueError("a retired automation gets no new versions")
        latest = _row(
            conn.execute(
                select(automation_versions)
                .where(automation_versions.c.automation_id == automation_id)
                .order_by(automation_versions.c.version.desc())
                .limit(1)
            )
            .mappings()
            .one()
        )
        new = {k: change.get(k, latest[k]) for k in ("trigger", "steps", "preconditions")}
        changed = diff(latest, new)
        if not changed:
            raise ValueError("the new version would be the same as the latest one")
        number = int(latest["version"]) + 1
        conn.execute(
            insert(automation_versions).values(
                automation_id=automation_id,
                version=number,
                tenant_id=tenant,
                trigger=json.dumps(new["trigger"]),
                steps=json.dumps(new["steps"]),
                preconditions=json.dumps(new["preconditions"]),
                source=json.dumps(source),
                diff=json.dumps({"against": latest["version"], **changed}),
                author=author,
                created_at=utcnow(),
            )
        )
        audit = audit_event(
            service="automation",
            tenant_id=tenant,
            actor=author,
            action="automation.version.proposed",
            subject_kind="automation",
            subject_id=automation_id,
            cause_id=cause,
            details={"version": number, "source": source, "diff": changed},
        )
        stage(conn, outbox, [audit], self.namespace)
        return number

    def set_status(self, tenant: str, automation_id: str, verb: str, who: str, why: str) -> dict[str, Any]:
        """pause, resume or retire, with who and why. Raises LookupError or ValueError (a
        change the automation's state does not allow)."""
        allowed = {"pause": ("active",), "resume": ("paused",), "retire": ("draft", "active", "paused")}
        new = {"pause": "paused", "resume": "active", "retire": "retired"}[verb]
        with self.engine.begin() as conn:
            row = conn.execute(
                select(automations.c.status)
                .where(automations.c.tenant_id == tenant, automations.c.automation_id == automation_id)
                .with_for_update()
            ).first()
            if row is None:
                raise LookupError(f"no automation {automation_id} for tenant {tenant}")
            if row.status not in allowed[verb]:
                raise ValueError(f"a {row.status} automation cannot be {new}")
            conn.execute(
                update(automations)
                .where(automations.c.automation_id == automation_id)
                .values(status=new, status_by=who, status_reason=why, status_at=utcnow(), failures_in_row=0)
            )
            audit = audit_event(
                service="automation",
                tenant_id=tenant,
                actor=who,
                action=f"automation.{new}",
                subject_kind="automation",
                subject_id=automation_id,
                cause_id=f"{automation_id}:{verb}:{uuid.uuid4()}",
                details={"reason": why, "previous": row.status},
            )
            stage(conn, outbox, [audit], self.namespace)
        self.relay.wake()
        got = self.get(tenant, automation_id)
        assert got is not None
        return got

    def active(self, tenant: str) -> builtins.list[dict[str, Any]]:
        """The tenant's approved automations that are active or paused (a paused one is matched
        so the record shows what it would have done, but never runs), with their current
        version and who approved it."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(automations, automation_versions)
                .join(
                    automation_versions,
                    (automation_versions.c.automation_id == automations.c.automation_id)
                    & (automation_versions.c.version == automations.c.current_version),
                )
                .where(automations.c.tenant_id == tenant, automations.c.status.in_(["active", "paused"]))
            ).mappings()
            out = [_row(r) for r in rows]
            for a in out:
                a["approved_by"] = conn.execute(
                    select(automation_approvals.c.approver)
                    .where(
                        automation_approvals.c.automation_id == a["automation_id"],
                        automation_approvals.c.version == a["version"],
                    )
                    .order_by(automation_approvals.c.approved_at.desc())
                    .limit(1)
                ).scalar()
        return out

    def runs(self, tenant: str, automation_id: str, limit: int = 100) -> dict[str, Any]:
        """What the automation did: each rollout decision, each run with its steps' outcomes and
        logs, each failure analysis; its success rate and the time it saved."""
        with self.engine.connect() as conn:
            known = conn.execute(
                select(automations.c.automation_id).where(
                    automations.c.tenant_id == tenant, automations.c.automation_id == automation_id
                )
            ).first()
            if known is None:
                raise LookupError(f"no automation {automation_id} for tenant {tenant}")
            ran = [
                {**dict(r), "steps": json.loads(r["steps"])}
                for r in conn.execute(
                    select(runs)
                    .where(runs.c.tenant_id == tenant, runs.c.automation_id == automation_id)
                    .order_by(runs.c.created_at.desc())
                    .limit(limit)
                ).mappings()
            ]
            for r in ran:
                r["log"] = [
                    {**dict(x), "response": json.loads(x["response"]) if x["response"] else None}
                    for x in conn.execute(
                        select(
                            ledger.c.step,
                            ledger.c.action,
                            ledger.c.state,
                            ledger.c.attempts,
                            ledger.c.duration_ms,
                            ledger.c.error_class,
                            ledger.c.message,
                            ledger.c.response,
                        )
                        .where(ledger.c.run_id == r["run_id"])
                        .order_by(ledger.c.step)
                    ).mappings()
                ]
            chosen = [
                {**dict(d), "params": json.loads(d["params"])}
                for d in conn.execute(
                    select(decisions)
                    .where(decisions.c.tenant_id == tenant, decisions.c.automation_id == automation_id)
                    .order_by(decisions.c.created_at.desc())
                    .limit(limit)
                ).mappings()
            ]
            failed = [
                {**dict(f), "analysis": json.loads(f["analysis"])}
                for f in conn.execute(
                    select(failures)
                    .where(failures.c.tenant_id == tenant, failures.c.automation_id == automation_id)
                    .order_by(failures.c.created_at.desc())
                    .limit(limit)
                ).mappings()
            ]
        return {
            "automation_id": automation_id,
            "runs": ran,
            "decisions": chosen,
            "failures": failed,
            **self.stats(tenant, automation_id),
        }

    def stats(self, tenant: str, automation_id: str) -> dict[str, Any]:
        """Success rate over finished runs; time saved = per succeeded run, the tenant's median
        manual handling time for tickets of the automation's category minus the run's time."""
        with self.engine.connect() as conn:
            finished = conn.execute(
                select(runs.c.status, runs.c.created_at, runs.c.finished_at).where(
                    runs.c.tenant_id == tenant,
                    runs.c.automation_id == automation_id,
                    runs.c.status.in_(["succeeded", "failed"]),
                )
            ).all()
            trigger = conn.execute(
                select(automation_versions.c.trigger)
                .where(automation_versions.c.automation_id == automation_id)
                .order_by(automation_versions.c.version.desc())
                .limit(1)
            ).scalar()
            category = json.loads(trigger).get("category") if trigger else None
            automated = select(runs.c.ticket_id).where(
                runs.c.tenant_id == tenant, runs.c.automation_id.is_not(None), runs.c.ticket_id.is_not(None)
            )
            manual = [
                (r.resolved_at - r.opened_at).total_seconds()
                for r in conn.execute(
                    select(ticket_context.c.opened_at, ticket_context.c.resolved_at).where(
                        ticket_context.c.tenant_id == tenant,
                        ticket_context.c.category == category,
                        ticket_context.c.resolved_at.is_not(None),
                        ticket_context.c.opened_at.is_not(None),
                        ticket_context.c.ticket_id.not_in(automated),
                    )
                )
            ]
        ok = [r for r in finished if r.status == "succeeded"]
        median_manual = statistics.median(manual) if manual else None
        saved = 0.0
        if median_manual is not None:
            for r in ok:
                took = (r.finished_at - r.created_at).total_seconds() if r.finished_at else 0.0
                saved += max(median_manual - took, 0.0)
        return {
            "finished_runs": len(finished),
            "succeeded_runs": len(ok),
            "success_rate": round(len(ok) / len(finished), 4) if finished else None,
            "median_manual_handling_s": median_manual,
            "manual_tickets_measured": len(manual),
            "time_saved_s": round(saved, 1) if median_manual is not None else None,
        }


def _engineer_runs(tenant: str, ticket_id: str) -> tuple[Any, ...]:
    """The succeeded, real runs on a ticket that an engineer asked for: a resolution, not what
    an automation or the service's own notes did on the ticket."""
    return (
        runs.c.tenant_id == tenant,
        runs.c.ticket_id == ticket_id,
        runs.c.status == "succeeded",
        runs.c.dry_run.is_(False),
        runs.c.automation_id.is_(None),
        runs.c.requested_by != "service:automation",
    )
