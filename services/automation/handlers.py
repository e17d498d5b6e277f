"""The automation service's topic consumers (group `<consumer group>-automations`), keyed by
tenant so each tenant's events arrive in order:

- tickets.events.v1: the ticket's history (text, requester, device, notes, when it opened and
  resolved) for triggers, drafts and mining; on `resolved`, a draft automation from the
  ticket's succeeded runs or, without any, from the steps its notes describe;
- tickets.triaged.v1: which approved automations fit the ticket, and what the tenant's rollout
  mode for its category lets happen (rollout.py): recorded, suggested, or run;
- automation.results.v1: after an automation's run, the outcome into the ticket; after a
  failure, the analysis (the reasoning layer's `analyse_failure`), a proposed version
  (maintain.py), and a pause after the tenant's number of failures in a row.

Every write goes with its audit events and any run it starts in one transaction (the outbox),
and each is keyed (ticket and automation, run) so a redelivery changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, insert, select, update

from libs.common.audit import audit_event
from libs.common.events import AutomationResult, Envelope, TicketEvent, TicketTriaged, utcnow
from libs.common.outbox import OutboxRelay, stage
from libs.common.reasoning import (
    AnalyseFailureInput,
    AnalyseFailureOutput,
    ExtractStepsInput,
    ExtractStepsOutput,
    Reasoning,
    TicketContext,
)
from services.automation import store
from services.automation.automations import Automations, group_in, ticket_text
from services.automation.catalogue import catalogue
from services.automation.interpret import LocalInterpreter, Ticket
from services.automation.interpret import Plan as InterpretedPlan
from services.automation.interpret import Step as InterpretedStep
from services.automation.maintain import propose_fix
from services.automation.planner import judge_steps
from services.automation.rollout import (
    Match,
    bind,
    blocked_by_policy,
    checks_of,
    decide_mode,
    trigger_fits,
    unmet,
)
from services.automation.runs import make_run, note_run
from services.automation.tables import (
    automation_versions,
    automations,
    decisions,
    failures,
    outbox,
    runs,
    ticket_context,
    tools,
)

log = logging.getLogger(__name__)
NOTES_MAX = 20_000
Embed = Callable[[Sequence[str]], np.ndarray]


def fields_of(ctx: dict[str, Any], trigger: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ticket fields a parameter may be bound to: requester, device, and the group its text
    names the way the automation's source ticket named one."""
    text = " ".join(f"{ctx.get('title') or ''}. {ctx.get('description') or ''}".split())
    return {
        "requester": ctx.get("requester"),
        "device": ctx.get("device"),
        "group": group_in((trigger or {}).get("group_pattern"), text),
    }


class Lifecycle:
    def __init__(
        self,
        engine: Engine,
        relay: OutboxRelay | Any,
        automations_: Automations,
        *,
        embed: Embed,
        reasoning: Reasoning | None = None,
        interpreter: LocalInterpreter | None = None,
        namespace: str = "",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.relay = relay
        self.automations = automations_
        self.embed = embed
        self.reasoning = reasoning
        self.interpreter = interpreter or LocalInterpreter(embed)
        self.namespace = namespace
        self.clock = clock or (lambda: datetime.now(UTC))

    async def handle(self, event: Envelope, _record: Any = None) -> None:
        if isinstance(event, TicketTriaged):
            p = event.payload
            await asyncio.to_thread(
                self.remember, event.tenant_id, p.ticket_id, category=p.category.label, intent=p.intent.label
            )
            if await self.rollout(event):
                self.relay.wake()
        elif isinstance(event, TicketEvent):
            await asyncio.to_thread(self.remember_event, event)
            if event.payload.kind == "resolved":
                if await self.draft(event):
                    self.relay.wake()
        elif isinstance(event, AutomationResult) and not event.payload.dry_run:
            if event.payload.outcome in ("succeeded", "failed") and await self.after_run(event):
                self.relay.wake()

    # --- the ticket's history ------------------------------------------------------------------

    def remember(self, tenant: str, ticket_id: str, **values: Any) -> None:
        values = {k: v for k, v in values.items() if v is not None}
        with self.engine.begin() as conn:
            self._upsert(conn, tenant, ticket_id, values)

    def _upsert(self, conn: Any, tenant: str, ticket_id: str, values: dict[str, Any]) -> None:
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
                    **{"title": "", **values},
                    updated_at=utcnow(),
                )
            )

    def remember_event(self, event: TicketEvent) -> None:
        p, t = event.payload, event.payload.ticket
        values: dict[str, Any] = {
            "title": t.title,
            "description": t.description[:4000] or None,
            "requester": t.requester,
            "device": t.devices[0] if t.devices else None,
            "psa_category": t.category,
            "status": p.kind if p.kind in ("resolved", "closed", "reopened") else t.status,
        }
        values = {k: v for k, v in values.items() if v is not None}
        with self.engine.begin() as conn:
            row = conn.execute(
                select(ticket_context.c.opened_at, ticket_context.c.notes, ticket_context.c.resolved_at)
                .where(
                    ticket_context.c.tenant_id == event.tenant_id, ticket_context.c.ticket_id == t.ticket_id
                )
                .with_for_update()
            ).first()
            if row is None or row.opened_at is None:
                values["opened_at"] = event.occurred_at
            if p.kind in ("resolved", "closed") and (row is None or row.resolved_at is None):
                values["resolved_at"] = event.occurred_at
            if p.kind == "reopened":
                values["resolved_at"] = None
            if p.note is not None and p.note.text.strip():
                before = (row.notes if row is not None else None) or ""
                marker = f"[{p.note.note_id}]"
                if marker not in before:  # a redelivered note is not appended twice
                    values["notes"] = f"{before}\n{marker} {p.note.author or ''}: {p.note.text}".strip()[
                        -NOTES_MAX:
                    ]
            self._upsert(conn, event.tenant_id, t.ticket_id, values)

    # --- drafts from resolutions ---------------------------------------------------------------

    async def draft(self, event: TicketEvent) -> str | None:
        tenant, ticket_id = event.tenant_id, event.payload.ticket.ticket_id
        made = await asyncio.to_thread(self.automations.draft_for, tenant, ticket_id, str(event.event_id))
        if made is not None:
            return made
        # Read the notes (a Claude call, when configured) only for a ticket that has neither a
        # draft already (a redelivery) nor succeeded runs of its own.
        if not await asyncio.to_thread(self.automations.undrafted_without_runs, tenant, ticket_id):
            return None
        ctx = await asyncio.to_thread(self._ctx, tenant, ticket_id)
        notes = (ctx or {}).get("notes") or ""
        if not notes.strip():
            return None
        steps, author = await self.steps_from_notes(tenant, ctx or {}, notes)
        if not steps:
            return None
        return await asyncio.to_thread(
            self.automations.draft_for, tenant, ticket_id, str(event.event_id), steps, author
        )

    async def steps_from_notes(
        self, tenant: str, ctx: dict[str, Any], notes: str
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The catalogue steps the notes say were done: Claude's `extract_steps` when it is
        configured, else the local interpreter over the notes; only steps with every required
        parameter found."""
        lines = [line.split("] ", 1)[-1] for line in notes.splitlines() if line.strip()]
        author = None
        if lines and ":" in lines[-1]:
            author = lines[-1].split(":", 1)[0].strip() or None
        text = " ".join(line.split(":", 1)[-1].strip() for line in lines)
        if self.reasoning is not None and self.reasoning.claude is not None:
            answer = await self.reasoning.ask_claude(
                "extract_steps",
                tenant,
                ExtractStepsInput(
                    resolution=text[:20000],
                    ticket=TicketContext(
                        text=ticket_text(ctx),
                        requester=ctx.get("requester"),
                        devices=[ctx["device"]] if ctx.get("device") else [],
                    ),
                    catalogue=sorted(catalogue()),
                ),
            )
            if isinstance(answer, ExtractStepsOutput):
                cat = catalogue()
                known = (text, ticket_text(ctx), ctx.get("requester") or "", ctx.get("device") or "")
                said = " ".join(known).lower()
                steps = []
                for s in answer.steps:
                    # Only values the notes or the ticket hold: a step with a value Claude supplied
                    # from nowhere is left out of the draft (an engineer can add it by an edit).
                    if any(str(v).lower() not in said for v in s.params.values() if v not in (None, "")):
                        continue
                    try:
                        params = cat[s.action].validate(s.params).model_dump(mode="json", exclude_none=True)
                    except (KeyError, ValueError):
                        continue
                    steps.append({"action": s.action, "params": params})
                return steps, author
        plan = await asyncio.to_thread(
            self.interpreter.interpret,
            text,
            Ticket(requester=ctx.get("requester"), device=ctx.get("device"), summary=ticket_text(ctx)),
        )
        return [{"action": s.action, "params": dict(s.params)} for s in plan.steps if not s.missing], author

    def _ctx(self, tenant: str, ticket_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(ticket_context).where(
                        ticket_context.c.tenant_id == tenant, ticket_context.c.ticket_id == ticket_id
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    # --- recommend or run ----------------------------------------------------------------------

    async def rollout(self, event: TicketTriaged) -> int:
        """Decisions written for the automations that fit this ticket (0 when none does)."""
        tenant, p = event.tenant_id, event.payload
        ctx = await asyncio.to_thread(self._ctx, tenant, p.ticket_id)
        if ctx is None:
            return 0
        active = await asyncio.to_thread(self.automations.active, tenant)
        fits = [a for a in active if a["source_ticket_id"] != p.ticket_id and trigger_fits(a["trigger"], ctx)]
        if not fits:
            return 0
        vectors = await asyncio.to_thread(
            self.embed, [ticket_text(ctx)] + [a["trigger"].get("example") or a["name"] for a in fits]
        )
        sims = vectors[1:] @ vectors[0]
        policy = await asyncio.to_thread(store.get_policy, self.engine, tenant)
        always = frozenset(
            r["action"] for r in await asyncio.to_thread(store.allowed_always, self.engine, tenant)
        )
        written = 0
        for a, sim in zip(fits, sims, strict=True):
            if float(sim) < float(a["trigger"].get("threshold") or 0.0):
                continue
            fields = fields_of(ctx, a["trigger"])
            steps, missing = bind(a["steps"], fields)
            match = Match(
                automation_id=a["automation_id"],
                version=int(a["version"]),
                name=a["name"],
                similarity=round(float(sim), 4),
                steps=steps,
                missing=missing,
                unmet=unmet(a["preconditions"], fields),
            )
            blocked = (
                blocked_by_policy(steps, policy, now=self.clock(), always_allowed=always)
                if not missing
                else []
            )
            decision, reason = decide_mode(
                p.rollout_mode,
                match,
                blocked,
                paused=(a["status_reason"] or "paused") if a["status"] == "paused" else None,
            )
            if decision == "not_run":
                continue
            written += await asyncio.to_thread(
                self._decide, event, a, match, decision, reason, policy, always, str(ctx.get("title") or "")
            )
        return written

    def _decide(
        self,
        event: TicketTriaged,
        a: dict[str, Any],
        match: Match,
        decision: str,
        reason: str,
        policy: Any,
        always: frozenset[str],
        title: str,
    ) -> int:
        tenant, ticket_id, mode = event.tenant_id, event.payload.ticket_id, event.payload.rollout_mode
        key = f"{tenant}:{ticket_id}:{match.automation_id}"
        plan_id = run_id = None
        events: list[Envelope] = []
        with self.engine.begin() as conn:
            known = conn.execute(
                select(decisions.c.decision).where(
                    decisions.c.tenant_id == tenant,
                    decisions.c.ticket_id == ticket_id,
                    decisions.c.automation_id == match.automation_id,
                )
            ).first()
            if known is not None:
                return 0
            label = f"Automation '{match.name}' (version {match.version})"
            if decision == "suggested":
                plan_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"msp:{key}:plan"))
                planned = InterpretedPlan(
                    steps=[
                        InterpretedStep(
                            action=s["action"],
                            params={k: v for k, v in s["params"].items() if "{ticket." not in str(v)},
                            sources=dict.fromkeys(s["params"], "ticket"),
                            missing=[k for k, v in s["params"].items() if "{ticket." in str(v)],
                            clause=f"{label}, step {n}",
                            matched_by="automation",
                        )
                        for n, s in enumerate(match.steps)
                    ],
                    questions=[f"the ticket has no {m}: which one?" for m in match.missing],
                )
                store.insert_plan(
                    conn,
                    {
                        "plan_id": plan_id,
                        "tenant_id": tenant,
                        "ticket_id": ticket_id,
                        "instruction": f"{label}: {match.name}",
                        "ticket": {"ticket_id": ticket_id, "summary": title},
                        "steps": judge_steps(planned, policy, now=self.clock(), always_allowed=always),
                        "questions": planned.questions,
                        "unmatched": [],
                        "interpreter": "automation",
                        "status": "proposed",
                        "created_by": f"automation:{match.automation_id}",
                        "created_at": utcnow(),
                    },
                )
                text = (
                    f"{label} fits this ticket (similarity {match.similarity:.2f}); {reason}. "
                    f"To run it, confirm plan {plan_id}: msp plan confirm {plan_id} --tenant {tenant}"
                )
                row, run = note_run(
                    tenant, ticket_id, text, key=f"{key}:suggested", requested_by="service:automation"
                )
                store.insert_run(conn, row)
                events.append(run)
            elif decision == "ran":
                run_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"msp:{key}:run")
                row, run = make_run(
                    tenant,
                    match.steps,
                    requested_by=f"automation:{match.automation_id}",
                    ticket_id=ticket_id,
                    mode="auto",
                    run_id=run_uuid,
                    approved_by=a.get("approved_by"),
                    automation_id=match.automation_id,
                    automation_version=match.version,
                    checks=checks_of(a["preconditions"]),
                )
                run_id = str(run_uuid)
                store.insert_run(conn, row)
                events.append(run)
            conn.execute(
                insert(decisions).values(
                    tenant_id=tenant,
                    ticket_id=ticket_id,
                    automation_id=match.automation_id,
                    version=match.version,
                    mode=mode,
                    decision=decision,
                    similarity=match.similarity,
                    params=json.dumps(match.steps),
                    reason=reason,
                    plan_id=plan_id,
                    run_id=run_id,
                    created_at=utcnow(),
                )
            )
            events.append(
                audit_event(
                    service="automation",
                    tenant_id=tenant,
                    actor="service:automation",
                    action=f"automation.rollout.{decision}",
                    subject_kind="automation",
                    subject_id=match.automation_id,
                    cause_id=f"{key}:decision",
                    details={
                        "ticket_id": ticket_id,
                        "version": match.version,
                        "mode": mode,
                        "similarity": match.similarity,
                        "steps": match.steps,
                        "missing": match.missing,
                        "reason": reason,
                        "plan_id": plan_id,
                        "run_id": run_id,
                    },
                )
            )
            stage(conn, outbox, events, self.namespace)
        return 1

    # --- after a run: the outcome, and maintenance -------------------------------------------------

    async def after_run(self, event: AutomationResult) -> bool:
        tenant, p = event.tenant_id, event.payload
        run = await asyncio.to_thread(store.get_run, self.engine, tenant, str(p.run_id))
        if run is None or not run.get("automation_id") or not p.ticket_id:
            return False
        policy = await asyncio.to_thread(store.get_policy, self.engine, tenant)
        analysis: AnalyseFailureOutput | None = None
        failed = next((s for s in reversed(p.steps) if s.outcome == "failed"), None)
        if p.outcome == "failed" and failed is not None:
            ctx = await asyncio.to_thread(self._ctx, tenant, p.ticket_id or "") or {}
            data = AnalyseFailureInput(
                action=failed.action,
                error_class=failed.error_class or "unknown",
                message=failed.message[:4000],
                step=failed.index,
                params=failed.params,
                response=failed.response,
                ticket=TicketContext(text=ticket_text(ctx), requester=ctx.get("requester")),
            )
            if self.reasoning is not None:
                out, _ = await self.reasoning.judge("analyse_failure", tenant, data)
            else:
                from libs.common.reasoning import analyse_failure_locally

                out = await asyncio.to_thread(analyse_failure_locally, data)
            assert isinstance(out, AnalyseFailureOutput)
            analysis = out
        return await asyncio.to_thread(self._after_run, event, run, failed, analysis, policy)

    def _after_run(
        self,
        event: AutomationResult,
        run: dict[str, Any],
        failed: Any,
        analysis: AnalyseFailureOutput | None,
        policy: Any,
    ) -> bool:
        tenant, p = event.tenant_id, event.payload
        run_id, automation_id = str(p.run_id), str(run["automation_id"])
        version = int(run["automation_version"] or 0)
        events: list[Envelope] = []
        with self.engine.begin() as conn:
            note_key = f"{tenant}:{run_id}:outcome"
            note_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"msp:{tenant}:note:{note_key}"))
            if conn.execute(select(runs.c.run_id).where(runs.c.run_id == note_id)).first() is not None:
                return False  # handled before (a redelivery)
            auto = (
                conn.execute(
                    select(automations).where(automations.c.automation_id == automation_id).with_for_update()
                )
                .mappings()
                .one()
            )
            label = f"Automation '{auto['name']}' (version {version})"
            texts: list[tuple[str, str]] = []
            if p.outcome == "succeeded":
                conn.execute(
                    update(automations)
                    .where(automations.c.automation_id == automation_id)
                    .values(failures_in_row=0)
                )
                took = sum(s.duration_ms or 0.0 for s in p.steps) / 1000
                texts.append(
                    (
                        note_key,
                        f"{label} ran on this ticket: succeeded, {len(p.steps)} step(s) in {took:.1f} s.",
                    )
                )
                action = "automation.run.succeeded"
                details: dict[str, Any] = {"run_id": run_id, "version": version, "ticket_id": p.ticket_id}
            else:
                assert analysis is not None and failed is not None
                current = (
                    conn.execute(
                        select(automation_versions).where(
                            automation_versions.c.automation_id == automation_id,
                            automation_versions.c.version == version,
                        )
                    )
                    .mappings()
                    .one()
                )
                current_doc = {k: json.loads(current[k]) for k in ("trigger", "steps", "preconditions")}
                systems = conn.execute(select(tools.c.systems).where(tools.c.tenant_id == tenant)).scalar()
                system_of = json.loads(systems) if systems else {}
                spec = catalogue().get(failed.action)
                fix = propose_fix(
                    current_doc,
                    {
                        "step": failed.index,
                        "action": failed.action,
                        "error_class": failed.error_class,
                        "message": failed.message,
                        "params": failed.params,
                    },
                    connector_kind=system_of.get(spec.system) if spec is not None else None,
                )
                proposed = None
                if fix is not None:
                    change, why = fix
                    try:
                        proposed = self.automations.add_version(
                            tenant,
                            automation_id,
                            change,
                            author="service:automation",
                            source={"kind": "failure_analysis", "run_id": run_id, "why": why},
                            cause=f"{run_id}:proposed",
                            conn=conn,
                        )
                    except ValueError:
                        proposed = None  # the same change is already proposed, or retired
                report = {
                    "step": failed.index,
                    "action": failed.action,
                    "error_class": failed.error_class,
                    "message": failed.message[:1000],
                    "response": failed.response,
                    **analysis.model_dump(),
                    "proposed_version": proposed,
                    "proposal": fix[1] if fix else None,
                }
                conn.execute(
                    insert(failures).values(
                        run_id=run_id,
                        tenant_id=tenant,
                        automation_id=automation_id,
                        version=version,
                        step=failed.index,
                        action=failed.action,
                        error_class=failed.error_class,
                        analysis=json.dumps(report, default=str),
                        proposed_version=proposed,
                        created_at=utcnow(),
                    )
                )
                in_row = int(auto["failures_in_row"] or 0) + 1
                values: dict[str, Any] = {"failures_in_row": in_row}
                pause = auto["status"] == "active" and in_row >= policy.pause_after_failures
                if pause:
                    values.update(
                        status="paused",
                        status_by="service:automation",
                        status_reason=f"{in_row} failed runs in a row (the tenant pauses at "
                        f"{policy.pause_after_failures})",
                        status_at=utcnow(),
                    )
                conn.execute(
                    update(automations).where(automations.c.automation_id == automation_id).values(**values)
                )
                proposal = (
                    f" Version {proposed} is proposed for approval: {fix[1]}." if proposed and fix else ""
                )
                texts.append(
                    (
                        note_key,
                        f"{label} failed at step {failed.index} ({failed.action}): {analysis.cause}. "
                        f"{analysis.advice}.{proposal}",
                    )
                )
                if pause:
                    texts.append(
                        (
                            f"{tenant}:{run_id}:paused",
                            f"{label} is paused after {in_row} failed runs in a row; it will not run "
                            "again until someone resumes it.",
                        )
                    )
                    events.append(
                        audit_event(
                            service="automation",
                            tenant_id=tenant,
                            actor="service:automation",
                            action="automation.paused",
                            subject_kind="automation",
                            subject_id=automation_id,
                            cause_id=f"{run_id}:paused",
                            details={"reason": values["status_reason"], "failures_in_row": in_row},
                        )
                    )
                action = "automation.run.failed"
                details = {"run_id": run_id, "version": version, "ticket_id": p.ticket_id, "analysis": report}
            assert p.ticket_id is not None
            for key, text in texts:
                row, note = note_run(tenant, p.ticket_id, text, key=key, requested_by="service:automation")
                store.insert_run(conn, row)
                events.append(note)
            events.append(
                audit_event(
                    service="automation",
                    tenant_id=tenant,
                    actor="service:automation",
                    action=action,
                    subject_kind="automation",
                    subject_id=automation_id,
                    cause_id=f"{run_id}:outcome",
                    outcome="ok" if p.outcome == "succeeded" else "failed",
                    details=details,
                )
            )
            stage(conn, outbox, events, self.namespace)
        return True
