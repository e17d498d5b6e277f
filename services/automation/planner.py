"""From an instruction to a plan an engineer can confirm: interpret it (Claude through the
reasoning layer when configured, restricted to the actions the tenant allows; the local
interpreter otherwise), then say for each step what the tenant policy says of it.

Whoever interprets, nothing is guessed: a parameter Claude fills with a value found neither in
the instruction nor in the ticket becomes a question, and a step outside the catalogue or the
tenant's allowed actions never reaches the plan.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any

from pydantic import Field

from libs.common.jsontypes import RequestBody
from libs.common.reasoning import (
    ActionSpec,
    InterpretInput,
    InterpretOutput,
    ParamSpec,
    Reasoning,
    TicketContext,
)
from services.automation.catalogue import Action, catalogue
from services.automation.interpret import LocalInterpreter, Plan, Step, Ticket
from services.automation.policy import TenantPolicy, decide


class TicketIn(RequestBody):
    ticket_id: str | None = Field(default=None, max_length=200)
    requester: str | None = Field(default=None, max_length=300)
    device: str | None = Field(default=None, max_length=200)
    summary: str = Field(default="", max_length=4000)


def action_specs(actions: list[Action]) -> list[ActionSpec]:
    """The catalogue as the reasoning layer's interpret judgement takes it."""
    specs = []
    for a in actions:
        params = []
        for name, f in a.params.model_fields.items():
            choices = [str(c) for c in getattr(f.annotation, "__args__", ()) if isinstance(c, str)]
            kind = "boolean" if f.annotation is bool else "choice" if choices else "text"
            params.append(ParamSpec(name=name, kind=kind, required=f.is_required(), choices=choices))
        specs.append(
            ActionSpec(name=a.name, description=a.description, examples=list(a.examples), params=params)
        )
    return specs


class Planner:
    def __init__(self, reasoning: Reasoning, local: LocalInterpreter) -> None:
        self.reasoning = reasoning
        self.local = local

    async def interpret(
        self, tenant_id: str, instruction: str, ticket: TicketIn, policy: TenantPolicy
    ) -> tuple[Plan, str]:
        """(plan, "claude" or "local")."""
        allowed = [a for a in catalogue().values() if _action_allowed(policy, a)]
        if self.reasoning.claude is not None and allowed:
            data = InterpretInput(
                instruction=instruction,
                ticket=TicketContext(
                    text=ticket.summary,
                    requester=ticket.requester,
                    devices=[ticket.device] if ticket.device else [],
                ),
                catalogue=action_specs(allowed),
            )
            answer = await self.reasoning.ask_claude("interpret", tenant_id, data)
            if isinstance(answer, InterpretOutput):
                return from_claude(answer, instruction, ticket), "claude"
        plan = await asyncio.to_thread(
            self.local.interpret,
            instruction,
            Ticket(requester=ticket.requester, device=ticket.device, summary=ticket.summary),
        )
        names = {a.name for a in allowed}
        refused = [s for s in plan.steps if s.action not in names]
        plan.steps = [s for s in plan.steps if s.action in names]
        plan.unmatched += [f"{s.clause} ({s.action} is not allowed for this tenant)" for s in refused]
        return plan, "local"


def _action_allowed(policy: TenantPolicy, action: Action) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(action.name, p) for p in policy.allowed_actions)


def from_claude(out: InterpretOutput, instruction: str, ticket: TicketIn) -> Plan:
    """Claude's plan in the local plan's form, with the source of each parameter; a value found
    in neither the instruction nor the ticket is a question, not an answer."""
    haystack_instruction = instruction.lower()
    haystack_ticket = " ".join(x for x in (ticket.requester, ticket.device, ticket.summary) if x).lower()
    plan = Plan(unmatched=list(out.unresolved))
    cat = catalogue()
    for s in out.steps:
        action = cat[s.action]
        params: dict[str, Any] = {}
        sources: dict[str, Any] = {}
        missing: list[str] = []
        for name, value in s.params.items():
            low = str(value).lower()
            field = action.params.model_fields.get(name)
            if field is not None and field.annotation is bool:
                params[name] = low in ("true", "yes", "1")
                sources[name] = "instruction"
            elif _found(low, haystack_instruction):
                params[name], sources[name] = value, "instruction"
            elif _found(low, haystack_ticket):
                params[name], sources[name] = value, "ticket"
            else:
                missing.append(name)
        missing += [n for n in action.required() if n not in params and n not in missing]
        plan.steps.append(Step(s.action, params, sources, missing, s.why or instruction, "claude"))
    for st in plan.steps:
        for name in st.missing:
            plan.questions.append(f"{st.action}: which {name.replace('_', ' ')}?")
    return plan


def _found(value: str, text: str) -> bool:
    if not value:
        return False
    if value in text:
        return True
    # Script names written as words ("flush dns" for flush_dns), rights in CamelCase.
    spaced = re.sub(r"[_-]+", " ", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", value)).lower()
    return spaced in text or value.replace("_", "") in text.replace(" ", "")


def judge_steps(
    plan: Plan, policy: TenantPolicy, *, now: datetime, always_allowed: frozenset[str]
) -> list[dict[str, Any]]:
    """Each step as the API shows it: action, parameters with their sources, risk, and what the
    policy says (runnable, needs approval, refused with its rule, or incomplete)."""
    out = []
    cat = catalogue()
    for n, s in enumerate(plan.steps):
        action = cat[s.action]
        verdict = decide(policy, action, s.params, now=now, always_allowed=always_allowed)
        if s.missing:
            status = "incomplete"
        elif not verdict.allowed:
            status = "refused"
        elif verdict.needs_approval:
            status = "needs approval"
        else:
            status = "runnable"
        out.append(
            {
                "index": n,
                "action": s.action,
                "params": {**s.params},
                "sources": s.sources,
                "missing": s.missing,
                "risk": action.risk,
                "scope": action.scope,
                "reversible": action.reversible,
                "status": status,
                "refused_by": verdict.refused_by,
                "approval_rule": verdict.approval_rule,
                "always_allowed": verdict.always_allowed,
                "clause": s.clause,
                "matched_by": s.matched_by,
            }
        )
    return out
