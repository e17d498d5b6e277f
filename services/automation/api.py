"""HTTP API of the automation service: the action catalogue, each tenant's tool map and policy,
instructions into plans, confirmation and approval, runs and their progress.

Who may do what (keys are checked with ingest, `libs/common/access.py`):
- read the catalogue, a tenant's plans, runs and policy: the operator token or any
  engineer-side key of that tenant (engineer, approver, admin);
- interpret an instruction, confirm a plan, enter an MFA code, see a temporary password: an
  engineer-side key of the tenant (or the operator token, except for approvals);
- approve or reject a plan, mark an action "always allowed": an approver or admin key of the
  tenant, never the person who asked for the plan;
- set the tool map (credentials) and the policy: the operator token or an admin key.
A key of one tenant never reads, plans or runs anything of another: the attempt is refused
(403) and recorded in the attacked tenant's audit trail.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import Field, ValidationError
from sqlalchemy import Engine

from libs.common import sla
from libs.common.access import Access, tenant_reader
from libs.common.audit import audit_event
from libs.common.crypto import SecretBox
from libs.common.events import (
    TENANT_PATTERN,
    ActionStep,
    AutomationRun,
    AutomationRunPayload,
    EventSource,
    utcnow,
)
from libs.common.jsontypes import Bool, Int, RequestBody
from libs.common.openapi import errors
from libs.common.outbox import OutboxRelay
from libs.common.service import TenantQuery
from services.automation import store
from services.automation.automations import Automations
from services.automation.catalogue import catalogue, get, idempotency_key, param_errors
from services.automation.connectors import ToolMap, ToolMapError, shown, validate_tool_map
from services.automation.connectors.base import temporary_password
from services.automation.miner import Miner
from services.automation.planner import Planner, TicketIn, judge_steps
from services.automation.policy import TenantPolicy, decide
from services.automation.runs import make_run
from services.automation.settings import AutomationSettings

TENANT = TENANT_PATTERN
Uuid = Annotated[str, PathParam(pattern=r"^[0-9a-f-]{36}$")]
ENGINEERS = frozenset({"engineer", "approver", "admin"})
APPROVERS = frozenset({"approver", "admin"})


class InstructionIn(RequestBody):
    tenant_id: str = Field(pattern=TENANT)
    instruction: str = Field(min_length=1, max_length=4000)
    ticket: TicketIn = Field(default_factory=TicketIn)


class ConfirmIn(RequestBody):
    tenant_id: str = Field(pattern=TENANT)
    # Edits before confirming: step index -> parameter -> value (answers to the plan's questions).
    edits: dict[int, dict[str, Any]] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": "^[0-9]{1,3}$"}}
    )
    # Run every step in dry-run mode: each says what it would do, nothing changes, no approval
    # is needed, and the plan stays proposed.
    dry_run: Bool = False


class DecisionIn(RequestBody):
    tenant_id: str = Field(pattern=TENANT)
    reason: str = Field(min_length=3, max_length=2000)


class StepIn(RequestBody):
    action: str = Field(min_length=3, max_length=100)
    # Literal values, or a ticket field written as {ticket.requester} / {ticket.device}.
    params: dict[str, Any] = Field(default_factory=dict)


class VersionIn(RequestBody):
    """A manual edit: what changes against the latest version (what is left out stays)."""

    tenant_id: str = Field(pattern=TENANT)
    reason: str = Field(min_length=3, max_length=2000)
    trigger: dict[str, Any] | None = None
    steps: list[StepIn] | None = Field(default=None, min_length=1, max_length=50)
    preconditions: list[dict[str, Any]] | None = Field(default=None, max_length=50)


class CodeIn(RequestBody):
    tenant_id: str = Field(pattern=TENANT)
    step: Int = Field(ge=0, le=100)
    code: str = Field(pattern=r"^[0-9A-Za-z]{4,10}$")


class AutomationApi:
    def __init__(
        self,
        *,
        settings: AutomationSettings,
        engine: Engine,
        box: SecretBox,
        planner: Planner,
        relay: OutboxRelay,
        secret: bytes,
        namespace: str = "",
        clock: Any = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.box = box
        self.planner = planner
        self.relay = relay
        self.secret = secret
        self.namespace = namespace
        self.clock = clock or (lambda: datetime.now(UTC))

    # --- who may ----------------------------------------------------------------------------

    async def allow(
        self, who: Access, tenant_id: str, roles: frozenset[str], *, what: str, operator: bool = True
    ) -> None:
        """Refuse (403, audited in the tenant asked about) a caller of another tenant, or
        without a role that may do this."""
        reason = None
        if who.kind == "operator":
            if not operator:
                reason = f"{what} takes a named person's key (approver or admin), not the operator token"
        elif who.kind != "key":
            reason = f"{what} takes a key; a signed link only reads"
        elif who.tenant_id != tenant_id:
            reason = f"a key of another tenant may not {what} for {tenant_id}"
        elif who.role not in roles:
            reason = f"{what} takes a key with role {' or '.join(sorted(roles))}, not {who.role}"
        if reason is None:
            return
        event = audit_event(
            service="automation",
            tenant_id=tenant_id,
            actor=who.person,
            action="automation.access.refused",
            subject_kind="automation.request",
            subject_id=what,
            cause_id=uuid.uuid4().hex,
            outcome="rejected",
            details={"caller_tenant": who.tenant_id, "role": who.role, "reason": reason},
        )
        await asyncio.to_thread(store.stage_events, self.engine, [event], namespace=self.namespace)
        self.relay.wake()
        raise HTTPException(403, reason)

    # --- plans --------------------------------------------------------------------------------

    async def propose(self, body: InstructionIn, who: Access) -> dict[str, Any]:
        await self.allow(who, body.tenant_id, ENGINEERS, what="interpret instructions")
        policy = await asyncio.to_thread(store.get_policy, self.engine, body.tenant_id)
        always = await self._always(body.tenant_id)
        plan, interpreter = await self.planner.interpret(
            body.tenant_id, body.instruction, body.ticket, policy
        )
        steps = judge_steps(plan, policy, now=self.clock(), always_allowed=always)
        plan_id = str(uuid.uuid4())
        if not steps:
            answer = (
                "No catalogue action fits this instruction; nothing will run. "
                + (f"Not understood: {'; '.join(plan.unmatched)}" if plan.unmatched else "")
            ).strip()
        else:
            answer = f"{len(steps)} step(s); confirm to run" + (
                f"; answer first: {'; '.join(plan.questions)}" if plan.questions else ""
            )
        row = {
            "plan_id": plan_id,
            "tenant_id": body.tenant_id,
            "ticket_id": body.ticket.ticket_id,
            "instruction": body.instruction,
            "ticket": body.ticket.model_dump(),
            "steps": steps,
            "questions": plan.questions,
            "unmatched": plan.unmatched,
            "interpreter": interpreter,
            "status": "proposed" if steps else "empty",
            "created_by": who.person,
            "created_at": utcnow(),
        }
        audit = self._audit(
            body.tenant_id,
            who.person,
            "automation.plan.proposed",
            plan_id,
            "ok",
            {
                "instruction": body.instruction,
                "ticket_id": body.ticket.ticket_id,
                "interpreter": interpreter,
                "steps": [
                    {"action": s["action"], "params": s["params"], "status": s["status"]} for s in steps
                ],
            },
        )
        await asyncio.to_thread(store.save_plan, self.engine, row, [audit], namespace=self.namespace)
        self.relay.wake()
        return {**_shown_plan(row), "answer": answer}

    async def confirm(self, plan_id: str, body: ConfirmIn, who: Access) -> dict[str, Any]:
        await self.allow(who, body.tenant_id, ENGINEERS, what="confirm plans")
        plan = await self._plan(body.tenant_id, plan_id)
        if plan["status"] != "proposed":
            raise HTTPException(409, f"this plan is {plan['status']}; only a proposed plan can be confirmed")
        policy = await asyncio.to_thread(store.get_policy, self.engine, body.tenant_id)
        always = await self._always(body.tenant_id)
        steps = [dict(s) for s in plan["steps"]]
        for index, changes in body.edits.items():
            if not 0 <= index < len(steps):
                raise HTTPException(422, f"the plan has no step {index}")
            steps[index]["params"] = {**steps[index]["params"], **changes}
            steps[index]["sources"] = {**steps[index]["sources"], **{k: "engineer" for k in changes}}
            steps[index]["missing"] = [m for m in steps[index]["missing"] if m not in changes]
        problems: list[str] = []
        needs_approval = []
        for s in steps:
            action = get(s["action"])
            assert action is not None
            try:
                params = action.validate(s["params"]).model_dump()
            except ValidationError as exc:
                problems.append(f"step {s['index']} ({s['action']}): {'; '.join(param_errors(exc))}")
                continue
            verdict = decide(policy, action, params, now=self.clock(), always_allowed=always)
            s.update(
                refused_by=verdict.refused_by,
                approval_rule=verdict.approval_rule,
                always_allowed=verdict.always_allowed,
            )
            if not verdict.allowed:
                problems.append(f"step {s['index']} ({s['action']}) refused by {verdict.refused_by}")
                s["status"] = "refused"
            elif verdict.needs_approval:
                needs_approval.append(s["index"])
                s["status"] = "needs approval"
            else:
                s["status"] = "runnable"
        if problems:
            audit = self._audit(
                body.tenant_id,
                who.person,
                "automation.plan.refused",
                plan_id,
                "rejected",
                {"problems": problems},
            )
            await asyncio.to_thread(store.stage_events, self.engine, [audit], namespace=self.namespace)
            self.relay.wake()
            raise HTTPException(409, {"message": "the plan cannot run as it is", "problems": problems})
        if body.edits:  # the engineer changed what the platform proposed: the counter-metric
            sla.CORRECTIONS.labels(sla.tenant_label(body.tenant_id), "plan_edited").inc()
        now = self.clock()
        if body.dry_run:
            return await self._start(plan, steps, who, approver=None, reason=None, expect=[], dry_run=True)
        if needs_approval:
            expires = now + timedelta(seconds=policy.approval_ttl_s)
            audit = self._audit(
                body.tenant_id,
                who.person,
                "automation.approval.requested",
                plan_id,
                "ok",
                {
                    "steps": needs_approval,
                    "expires_at": expires.isoformat(),
                    "rules": [steps[i]["approval_rule"] for i in needs_approval],
                },
            )
            ok = await asyncio.to_thread(
                store.decide_plan,
                self.engine,
                body.tenant_id,
                plan_id,
                expect=["proposed"],
                values={
                    "status": "awaiting approval",
                    "steps": _dumps(steps),
                    "expires_at": expires,
                    "created_by": plan["created_by"],
                },
                events=[audit],
                namespace=self.namespace,
            )
            if not ok:
                raise HTTPException(409, "the plan changed meanwhile; read it again")
            self.relay.wake()
            return {
                **_shown_plan({**plan, "steps": steps, "status": "awaiting approval", "expires_at": expires}),
                "answer": f"waiting for an approver (until {expires.isoformat()})",
            }
        return await self._start(plan, steps, who, approver=None, reason=None, expect=["proposed"])

    async def approve(self, plan_id: str, body: DecisionIn, who: Access, *, approve: bool) -> dict[str, Any]:
        await self.allow(who, body.tenant_id, APPROVERS, what="approve plans", operator=False)
        plan = await self._plan(body.tenant_id, plan_id)
        if plan["status"] != "awaiting approval":
            raise HTTPException(409, f"this plan is {plan['status']}, not awaiting approval")
        if who.person == plan["created_by"]:
            audit = self._audit(
                body.tenant_id,
                who.person,
                "automation.approval.refused",
                plan_id,
                "rejected",
                {"reason": "the approver asked for the plan themselves"},
            )
            await asyncio.to_thread(store.stage_events, self.engine, [audit], namespace=self.namespace)
            self.relay.wake()
            raise HTTPException(403, "an approver may not approve a plan they asked for; another person must")
        expires = plan["expires_at"]
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires is not None and expires <= self.clock():
            audit = self._audit(
                body.tenant_id,
                who.person,
                "automation.approval.expired",
                plan_id,
                "rejected",
                {"expired_at": expires.isoformat()},
            )
            await asyncio.to_thread(
                store.decide_plan,
                self.engine,
                body.tenant_id,
                plan_id,
                expect=["awaiting approval"],
                values={"status": "expired", "decided_at": utcnow()},
                events=[audit],
                namespace=self.namespace,
            )
            self.relay.wake()
            raise HTTPException(
                409,
                f"the approval request expired at {expires.isoformat()}: not approved; "
                "confirm the plan again to ask anew",
            )
        if not approve:
            audit = self._audit(
                body.tenant_id,
                who.person,
                "automation.plan.rejected",
                plan_id,
                "rejected",
                {"reason": body.reason},
            )
            ok = await asyncio.to_thread(
                store.decide_plan,
                self.engine,
                body.tenant_id,
                plan_id,
                expect=["awaiting approval"],
                values={
                    "status": "rejected",
                    "approved_by": who.person,
                    "approval_reason": body.reason,
                    "decided_at": utcnow(),
                },
                events=[audit],
                namespace=self.namespace,
            )
            if not ok:
                raise HTTPException(409, "the plan changed meanwhile; read it again")
            self.relay.wake()
            sla.CORRECTIONS.labels(sla.tenant_label(body.tenant_id), "plan_rejected").inc()
            return {"plan_id": plan_id, "status": "rejected"}
        return await self._start(
            plan, plan["steps"], who, approver=who.person, reason=body.reason, expect=["awaiting approval"]
        )

    async def _start(
        self,
        plan: dict[str, Any],
        steps: list[dict[str, Any]],
        who: Access,
        *,
        approver: str | None,
        reason: str | None,
        expect: list[str],
        dry_run: bool = False,
    ) -> dict[str, Any]:
        tenant, plan_id = plan["tenant_id"], plan["plan_id"]
        requested_by = plan["created_by"] if approver else who.person
        run, event = make_run(
            tenant,
            steps,
            requested_by=requested_by,
            ticket_id=plan["ticket_id"],
            plan_id=plan_id,
            approved_by=approver,
            dry_run=dry_run,
        )
        run_id = event.payload.run_id
        audit = self._audit(
            tenant,
            who.person,
            "automation.dry_run.requested" if dry_run else "automation.run.requested",
            str(run_id),
            "ok",
            {
                "plan_id": plan_id,
                "requested_by": requested_by,
                "approved_by": approver,
                "reason": reason,
                "ticket_id": plan["ticket_id"],
                "steps": [{"action": s["action"], "params": s["params"]} for s in steps],
            },
        )
        values: dict[str, Any] = {
            "status": "running",
            "run_id": str(run_id),
            "steps": _dumps(steps),
            "decided_at": utcnow(),
        }
        if approver:
            values.update(approved_by=approver, approval_reason=reason)
        if dry_run:
            await asyncio.to_thread(store.add_run, self.engine, run, [event, audit], namespace=self.namespace)
            self.relay.wake()
            return {
                "plan_id": plan_id,
                "status": "proposed",
                "run_id": str(run_id),
                "dry_run": True,
                "answer": f"dry run of {len(steps)} step(s); nothing changes; see /v1/runs/{run_id}",
            }
        ok = await asyncio.to_thread(
            store.decide_plan,
            self.engine,
            tenant,
            plan_id,
            expect=expect,
            values=values,
            events=[event, audit],
            run=run,
            namespace=self.namespace,
        )
        if not ok:
            raise HTTPException(409, "the plan changed meanwhile (confirmed or decided by someone else)")
        self.relay.wake()
        return {
            "plan_id": plan_id,
            "status": "running",
            "run_id": str(run_id),
            "answer": f"running {len(steps)} step(s); follow it at /v1/runs/{run_id}?tenant_id={tenant}",
        }

    # --- runs ---------------------------------------------------------------------------------

    async def run_view(self, tenant_id: str, run_id: str) -> dict[str, Any]:
        run = await asyncio.to_thread(store.get_run, self.engine, tenant_id, run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id} for tenant {tenant_id}")
        done = await asyncio.to_thread(store.steps_of, self.engine, tenant_id, run_id)
        by_step = {d["step"]: d for d in done}
        steps = []
        for n, s in enumerate(run["steps"]):
            d = by_step.get(n)
            steps.append(
                {
                    "index": n,
                    "action": s["action"],
                    "params": s["params"],
                    "state": d["state"] if d else "pending",
                    "attempts": d["attempts"] if d else 0,
                    "duration_ms": d["duration_ms"] if d else None,
                    "error_class": d["error_class"] if d else None,
                    "message": d["message"] if d else None,
                    "response": d["response"] if d else None,
                }
            )
        finished = sum(1 for s in steps if s["state"] in ("succeeded", "failed"))
        return {
            "run_id": run_id,
            "tenant_id": tenant_id,
            "plan_id": run["plan_id"],
            "ticket_id": run["ticket_id"],
            "status": run["status"],
            "requested_by": run["requested_by"],
            "approved_by": run["approved_by"],
            "progress": f"{finished}/{len(steps)}",
            "steps": steps,
            "created_at": run["created_at"],
            "finished_at": run["finished_at"],
        }

    async def enter_code(self, run_id: str, body: CodeIn, who: Access) -> dict[str, Any]:
        await self.allow(who, body.tenant_id, ENGINEERS, what="enter verification codes")
        run = await asyncio.to_thread(store.get_run, self.engine, body.tenant_id, run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id} for tenant {body.tenant_id}")
        ok = await asyncio.to_thread(
            store.put_code, self.engine, body.tenant_id, run_id, body.step, self.box.seal({"code": body.code})
        )
        if not ok:
            raise HTTPException(409, f"step {body.step} of this run is not waiting for a code")
        event = AutomationRun(
            event_id=uuid.uuid4(),
            tenant_id=body.tenant_id,
            occurred_at=utcnow(),
            source=EventSource(system="msp.automation", reference=run_id),
            payload=AutomationRunPayload(
                run_id=uuid.UUID(run_id),
                ticket_id=run["ticket_id"],
                steps=[ActionStep(**s) for s in run["steps"]],
                requested_by=run["requested_by"],
                mode="manual",
                plan_id=uuid.UUID(run["plan_id"]) if run["plan_id"] else None,
                approved_by=run["approved_by"],
            ),
        )
        audit = self._audit(
            body.tenant_id, who.person, "automation.code.entered", run_id, "ok", {"step": body.step}
        )
        await asyncio.to_thread(store.stage_events, self.engine, [event, audit], namespace=self.namespace)
        self.relay.wake()
        return {"run_id": run_id, "step": body.step, "answer": "code taken; the run continues"}

    async def password(self, tenant_id: str, run_id: str, step: int, who: Access) -> dict[str, Any]:
        await self.allow(who, tenant_id, ENGINEERS, what="read temporary passwords")
        view = await self.run_view(tenant_id, run_id)
        if not 0 <= step < len(view["steps"]):
            raise HTTPException(404, f"the run has no step {step}")
        s = view["steps"][step]
        if s["action"] != "identity.reset_password" or s["state"] != "succeeded":
            raise HTTPException(404, "this step set no temporary password")
        audit = self._audit(tenant_id, who.person, "automation.password.shown", run_id, "ok", {"step": step})
        await asyncio.to_thread(store.stage_events, self.engine, [audit], namespace=self.namespace)
        self.relay.wake()
        return {
            "run_id": run_id,
            "step": step,
            "user": s["params"].get("user"),
            "temporary_password": temporary_password(self.secret, idempotency_key(run_id, step)),
        }

    # --- helpers --------------------------------------------------------------------------------

    async def _plan(self, tenant_id: str, plan_id: str) -> dict[str, Any]:
        plan = await asyncio.to_thread(store.get_plan, self.engine, tenant_id, plan_id)
        if plan is None:
            raise HTTPException(404, f"no plan {plan_id} for tenant {tenant_id}")
        return plan

    async def _always(self, tenant_id: str) -> frozenset[str]:
        rows = await asyncio.to_thread(store.allowed_always, self.engine, tenant_id)
        return frozenset(r["action"] for r in rows)

    def _audit(
        self, tenant: str, actor: str, action: str, subject: str, outcome: str, details: dict[str, Any]
    ) -> Any:
        return audit_event(
            service="automation",
            tenant_id=tenant,
            actor=actor,
            action=action,
            subject_kind="automation.plan" if "plan" in action or "approval" in action else "automation.run",
            subject_id=subject,
            cause_id=f"{action}:{subject}:{uuid.uuid4().hex}",
            outcome=outcome,  # type: ignore[arg-type]
            details=details,
        )


def _dumps(steps: list[dict[str, Any]]) -> str:
    import json

    return json.dumps(steps, sort_keys=True, default=str)


def _shown_plan(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "plan_id": row["plan_id"],
        "tenant_id": row["tenant_id"],
        "ticket_id": row["ticket_id"],
        "instruction": row["instruction"],
        "status": row["status"],
        "interpreter": row["interpreter"],
        "steps": row["steps"],
        "questions": row["questions"],
        "unmatched": row["unmatched"],
        "created_by": row["created_by"],
        "expires_at": row.get("expires_at"),
        "approved_by": row.get("approved_by"),
        "approval_reason": row.get("approval_reason"),
        "run_id": row.get("run_id"),
    }


def make_router(
    api: AutomationApi,
    settings: AutomationSettings,
    drafts: Automations | None = None,
    miner: Miner | None = None,
) -> APIRouter:
    router = APIRouter()
    reader = tenant_reader(settings)

    @router.get("/v1/actions", tags=["catalogue"])
    async def actions(who: Access = reader) -> dict[str, Any]:
        """Every action the platform can plan and run: its parameters (JSON Schema), risk, the
        scope a tenant grants for it, whether it can be undone, and that it has a dry run."""
        return {"actions": [a.describe() for a in catalogue().values()]}

    @router.get("/v1/actions/{name}", tags=["catalogue"], responses=errors(404))
    async def action(
        name: Annotated[str, PathParam(pattern=r"^[a-z0-9_.]{3,100}$")], who: Access = reader
    ) -> dict[str, Any]:
        found = get(name)
        if found is None:
            raise HTTPException(404, f"no action {name}")
        return found.describe()

    @router.put("/v1/tools", tags=["tenants"])
    async def put_tools(tenant_id: TenantQuery, body: ToolMap, who: Access = reader) -> dict[str, Any]:  # type: ignore[valid-type]
        """The tenant's tool map: for each kind of system, the connector and its settings
        (credentials included; they are stored encrypted and never shown again)."""
        await api.allow(who, tenant_id, frozenset({"admin"}), what="set the tool map")
        try:
            tool_map = validate_tool_map(body.model_dump(mode="json", exclude_none=True))  # type: ignore[attr-defined]
        except ToolMapError as exc:
            raise HTTPException(422, str(exc)) from None
        await asyncio.to_thread(store.put_tools, api.engine, api.box, tenant_id, tool_map)
        audit = api._audit(
            tenant_id,
            who.person,
            "automation.tools.set",
            tenant_id,
            "ok",
            {"systems": {k: v["kind"] for k, v in tool_map.items()}},
        )
        await asyncio.to_thread(store.stage_events, api.engine, [audit], namespace=api.namespace)
        api.relay.wake()
        return {"tenant_id": tenant_id, "tools": shown(tool_map)}

    @router.get("/v1/tools", tags=["tenants"])
    async def get_tools(tenant_id: TenantQuery, who: Access = reader) -> dict[str, Any]:
        tool_map = await asyncio.to_thread(store.get_tools, api.engine, api.box, tenant_id)
        return {"tenant_id": tenant_id, "tools": shown(tool_map)}

    @router.put("/v1/policy", tags=["tenants"])
    async def put_policy(tenant_id: TenantQuery, body: TenantPolicy, who: Access = reader) -> dict[str, Any]:
        await api.allow(who, tenant_id, frozenset({"admin"}), what="set the action policy")
        unknown = [p for p in body.allowed_actions if "*" not in p and get(p) is None]
        if unknown:
            raise HTTPException(422, f"allowed_actions names actions not in the catalogue: {unknown}")
        await asyncio.to_thread(store.put_policy, api.engine, tenant_id, body, who.person)
        audit = api._audit(
            tenant_id,
            who.person,
            "automation.policy.set",
            tenant_id,
            "ok",
            {"policy": body.model_dump(mode="json")},
        )
        await asyncio.to_thread(store.stage_events, api.engine, [audit], namespace=api.namespace)
        api.relay.wake()
        return {"tenant_id": tenant_id, "policy": body.model_dump(mode="json")}

    @router.get("/v1/policy", tags=["tenants"])
    async def get_policy(tenant_id: TenantQuery, who: Access = reader) -> dict[str, Any]:
        policy = await asyncio.to_thread(store.get_policy, api.engine, tenant_id)
        always = await asyncio.to_thread(store.allowed_always, api.engine, tenant_id)
        return {"tenant_id": tenant_id, "policy": policy.model_dump(mode="json"), "always_allowed": always}

    @router.put("/v1/always-allowed/{name}", tags=["tenants"], responses=errors(404))
    async def grant_always(name: str, body: DecisionIn, who: Access = reader) -> dict[str, Any]:
        """An approver lets the tenant's engineers run this action without a second person."""
        await api.allow(who, body.tenant_id, APPROVERS, what="mark actions always allowed", operator=False)
        if get(name) is None:
            raise HTTPException(404, f"no action {name}")
        audit = api._audit(
            body.tenant_id,
            who.person,
            "automation.always_allowed.granted",
            name,
            "ok",
            {"reason": body.reason},
        )
        changed = await asyncio.to_thread(
            store.set_always_allowed,
            api.engine,
            body.tenant_id,
            name,
            by=who.person,
            reason=body.reason,
            on=True,
            events=[audit],
            namespace=api.namespace,
        )
        api.relay.wake()
        return {"action": name, "always_allowed": True, "changed": changed}

    @router.delete("/v1/always-allowed/{name}", tags=["tenants"])
    async def revoke_always(name: str, body: DecisionIn, who: Access = reader) -> dict[str, Any]:
        await api.allow(who, body.tenant_id, APPROVERS, what="revoke always-allowed actions", operator=False)
        audit = api._audit(
            body.tenant_id,
            who.person,
            "automation.always_allowed.revoked",
            name,
            "ok",
            {"reason": body.reason},
        )
        changed = await asyncio.to_thread(
            store.set_always_allowed,
            api.engine,
            body.tenant_id,
            name,
            by=who.person,
            reason=body.reason,
            on=False,
            events=[audit],
            namespace=api.namespace,
        )
        api.relay.wake()
        return {"action": name, "always_allowed": False, "changed": changed}

    @router.post("/v1/instructions", tags=["plans"], status_code=201)
    async def instructions(body: InstructionIn, who: Access = reader) -> dict[str, Any]:
        """An instruction and its ticket into a plan of catalogue actions: each step's
        parameters with where they came from, its risk, what the policy says, and the
        questions to answer before it can run. Nothing runs until the plan is confirmed."""
        return await api.propose(body, who)

    @router.get("/v1/plans", tags=["plans"])
    async def plans(
        tenant_id: TenantQuery, who: Access = reader, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> dict[str, Any]:
        rows = await asyncio.to_thread(store.list_plans, api.engine, tenant_id, limit)
        return {"tenant_id": tenant_id, "plans": [_shown_plan(r) for r in rows]}

    @router.get("/v1/plans/{plan_id}", tags=["plans"], responses=errors(404))
    async def plan(plan_id: Uuid, tenant_id: TenantQuery, who: Access = reader) -> dict[str, Any]:
        return _shown_plan(await api._plan(tenant_id, plan_id))

    @router.post("/v1/plans/{plan_id}/confirm", tags=["plans"], responses=errors(404, 409))
    async def confirm(plan_id: Uuid, body: ConfirmIn, who: Access = reader) -> dict[str, Any]:
        """Run the plan (with the engineer's edits); a step that needs approval makes the plan
        wait for an approver instead."""
        return await api.confirm(plan_id, body, who)

    @router.post("/v1/plans/{plan_id}/approve", tags=["plans"], responses=errors(404, 409))
    async def approve(plan_id: Uuid, body: DecisionIn, who: Access = reader) -> dict[str, Any]:
        return await api.approve(plan_id, body, who, approve=True)

    @router.post("/v1/plans/{plan_id}/reject", tags=["plans"], responses=errors(404, 409))
    async def reject(plan_id: Uuid, body: DecisionIn, who: Access = reader) -> dict[str, Any]:
        return await api.approve(plan_id, body, who, approve=False)

    @router.get("/v1/runs/{run_id}", tags=["runs"], responses=errors(404))
    async def run(run_id: Uuid, tenant_id: TenantQuery, who: Access = reader) -> dict[str, Any]:
        """A run's progress: each step's state, attempts, duration, error class and answer."""
        return await api.run_view(tenant_id, run_id)

    @router.post("/v1/runs/{run_id}/code", tags=["runs"], responses=errors(404, 409))
    async def code(run_id: Uuid, body: CodeIn, who: Access = reader) -> dict[str, Any]:
        """The code the person read out, for a step that challenged them (SMS or call)."""
        return await api.enter_code(run_id, body, who)

    @router.get("/v1/runs/{run_id}/steps/{step}/password", tags=["runs"], responses=errors(404))
    async def password(
        run_id: Uuid,
        step: Annotated[int, PathParam(ge=0, le=100)],
        tenant_id: TenantQuery,
        who: Access = reader,
    ) -> dict[str, Any]:
        """The temporary password a reset step set, for the engineer to pass on (audited)."""
        return await api.password(tenant_id, run_id, step, who)

    if drafts is None:
        return router

    @router.get("/v1/automations", tags=["automations"])
    async def automations_list(tenant_id: TenantQuery, who: Access = reader) -> dict[str, Any]:
        """The tenant's automations: drafts made from resolutions, and approved ones."""
        return {"tenant_id": tenant_id, "automations": await asyncio.to_thread(drafts.list, tenant_id)}

    @router.get("/v1/automations/{automation_id}", tags=["automations"], responses=errors(404))
    async def automation_get(
        automation_id: Uuid, tenant_id: TenantQuery, who: Access = reader
    ) -> dict[str, Any]:
        """An automation with every version (trigger, steps with bound parameters, source,
        diff against the previous one, author) and every approval."""
        found = await asyncio.to_thread(drafts.get, tenant_id, automation_id)
        if found is None:
            raise HTTPException(404, f"no automation {automation_id} for tenant {tenant_id}")
        return found

    @router.post(
        "/v1/automations/{automation_id}/versions/{version}/approve",
        tags=["automations"],
        responses=errors(404, 409),
    )
    async def automation_approve(
        automation_id: Uuid,
        version: Annotated[int, PathParam(ge=1, le=100_000)],
        body: DecisionIn,
        who: Access = reader,
    ) -> dict[str, Any]:
        """Make this version current (a draft's first approval makes version 1 live; an
        earlier version approved again is a rollback). Never by the version's author."""
        await api.allow(who, body.tenant_id, APPROVERS, what="approve automations", operator=False)
        try:
            return await asyncio.to_thread(
                drafts.approve, body.tenant_id, automation_id, version, who.person, body.reason
            )
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except PermissionError as exc:
            raise HTTPException(403, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    @router.post("/v1/automations/{automation_id}/versions", tags=["automations"], responses=errors(404, 409))
    async def automation_edit(automation_id: Uuid, body: VersionIn, who: Access = reader) -> dict[str, Any]:
        """A new version from a manual edit (its diff against the latest one is kept). It does
        not run until an approver other than its author approves it."""
        await api.allow(who, body.tenant_id, ENGINEERS, what="edit automations", operator=False)
        change: dict[str, Any] = {}
        if body.steps is not None:
            problems = []
            for n, step in enumerate(body.steps):
                action = get(step.action)
                if action is None:
                    problems.append(f"step {n}: no action {step.action} in the catalogue")
                    continue
                unknown = set(step.params) - set(action.params.model_fields)
                if unknown:
                    problems.append(f"step {n}: {step.action} has no parameters {sorted(unknown)}")
            if problems:
                raise HTTPException(422, {"message": "the steps are not valid", "problems": problems})
            change["steps"] = [s.model_dump() for s in body.steps]
        if body.trigger is not None:
            change["trigger"] = body.trigger
        if body.preconditions is not None:
            change["preconditions"] = body.preconditions
        try:
            number = await asyncio.to_thread(
                drafts.add_version,
                body.tenant_id,
                automation_id,
                change,
                author=who.person,
                source={"kind": "manual_edit", "reason": body.reason},
                cause=f"{automation_id}:edit:{uuid.uuid4()}",
            )
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        found = await asyncio.to_thread(drafts.get, body.tenant_id, automation_id)
        return {**(found or {}), "proposed_version": number}

    @router.get("/v1/automations/{automation_id}/versions", tags=["automations"], responses=errors(404))
    async def automation_versions(
        automation_id: Uuid, tenant_id: TenantQuery, who: Access = reader
    ) -> dict[str, Any]:
        """Every version: trigger, steps, preconditions, source, author, diff; and approvals."""
        found = await asyncio.to_thread(drafts.get, tenant_id, automation_id)
        if found is None:
            raise HTTPException(404, f"no automation {automation_id} for tenant {tenant_id}")
        return {
            "automation_id": automation_id,
            "current_version": found["current_version"],
            "versions": found["versions"],
            "approvals": found["approvals"],
        }

    async def change_status(automation_id: str, body: DecisionIn, who: Access, verb: str) -> dict[str, Any]:
        # Anyone who may run automations may pause one; resuming and retiring take an approver.
        roles = ENGINEERS if verb == "pause" else APPROVERS
        await api.allow(who, body.tenant_id, roles, what=f"{verb} automations", operator=False)
        try:
            return await asyncio.to_thread(
                drafts.set_status, body.tenant_id, automation_id, verb, who.person, body.reason
            )
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    @router.post("/v1/automations/{automation_id}/pause", tags=["automations"], responses=errors(404, 409))
    async def automation_pause(automation_id: Uuid, body: DecisionIn, who: Access = reader) -> dict[str, Any]:
        """Stop an active automation from matching or running until it is resumed (who and why kept)."""
        return await change_status(automation_id, body, who, "pause")

    @router.post("/v1/automations/{automation_id}/resume", tags=["automations"], responses=errors(404, 409))
    async def automation_resume(
        automation_id: Uuid, body: DecisionIn, who: Access = reader
    ) -> dict[str, Any]:
        """Let a paused automation match and run again (its failure count starts over)."""
        return await change_status(automation_id, body, who, "resume")

    @router.post("/v1/automations/{automation_id}/retire", tags=["automations"], responses=errors(404, 409))
    async def automation_retire(
        automation_id: Uuid, body: DecisionIn, who: Access = reader
    ) -> dict[str, Any]:
        """Retire for good: a retired automation never matches, never runs, gets no new version."""
        return await change_status(automation_id, body, who, "retire")

    @router.get("/v1/automations/{automation_id}/runs", tags=["automations"], responses=errors(404))
    async def automation_runs(
        automation_id: Uuid,
        tenant_id: TenantQuery,
        who: Access = reader,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Its rollout decisions, runs (with each step's log and outcome), failure analyses,
        success rate and time saved."""
        try:
            return await asyncio.to_thread(drafts.runs, tenant_id, automation_id, limit)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None

    if miner is None:
        return router

    async def mined(tenant_id: str, kind: str, refresh: bool, who: Access) -> dict[str, Any]:
        if refresh:
            await api.allow(who, tenant_id, ENGINEERS, what="mine the ticket history")
            await asyncio.to_thread(miner.compute, tenant_id)
        found = await asyncio.to_thread(miner.latest, tenant_id, kind)
        if found is None:
            return {
                "tenant_id": tenant_id,
                "computed_at": None,
                "stale": True,
                "answer": "not mined yet: it runs in the background as tickets resolve, "
                "or ask with refresh=true",
            }
        return {"tenant_id": tenant_id, **found}

    @router.get("/v1/candidates", tags=["automations"])
    async def candidates(
        tenant_id: TenantQuery, who: Access = reader, refresh: bool = False
    ) -> dict[str, Any]:
        """Recurring resolved work without an automation: clusters of similar tickets (and
        similar resolution steps where known), ranked by tickets x median handling time, each
        with what it would do and a variant per kind of tool where clients differ."""
        return await mined(tenant_id, "candidates", refresh, who)

    @router.get("/v1/readiness", tags=["automations"])
    async def readiness_report(
        tenant_id: TenantQuery, who: Access = reader, refresh: bool = False
    ) -> dict[str, Any]:
        """Per category: volume, near-duplicate share, label consistency, documented
        resolutions, handling time; the recommended pilot and the categories not ready, with why."""
        return await mined(tenant_id, "readiness", refresh, who)

    return router
