"""Which approved automation fits a new ticket, with what parameters, and what the tenant's
rollout mode lets the platform do with it. Pure: the handler (automations.py) reads the rows,
calls these, and writes the decision with its audit.

A trigger matches when the ticket's intent and category are the automation's (a trigger
without an intent needs the category) and the ticket reads like the automation's source ticket
(cosine similarity of their embeddings at least the trigger's threshold). Parameters written
as `{ticket.requester}`, `{ticket.device}` or `{ticket.group}` are bound from the new ticket; one
the ticket lacks makes the automation a recommendation only, never a run.

Modes (the tenant's rollout mode for the ticket's category, as triage published it):
- off: nothing (triage publishes nothing for such a category, so this is never reached);
- shadow: the decision is recorded (what would have run), nothing else;
- suggest: a plan for the engineer to confirm through the Resolve flow, named in the PSA note;
- auto: a run through the executor when every step is allowed by the tenant policy without an
  approval; otherwise the same as suggest, saying why.
A paused automation that matches is recorded as `paused` and does nothing; a retired one is
never matched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.automation.catalogue import get
from services.automation.policy import TenantPolicy, decide

PLACEHOLDER = re.compile(r"\{ticket\.([a-z_]+)\}")


@dataclass
class Match:
    automation_id: str
    version: int
    name: str
    similarity: float
    steps: list[dict[str, Any]]
    missing: list[str] = field(default_factory=list)
    unmet: list[str] = field(default_factory=list)  # preconditions the ticket does not meet


def trigger_fits(trigger: dict[str, Any], ticket: dict[str, Any]) -> bool:
    """Intent and category, before any similarity is computed."""
    if trigger.get("category") and trigger["category"] != ticket.get("category"):
        return False
    if trigger.get("intent") and trigger["intent"] != ticket.get("intent"):
        return False
    return bool(trigger.get("category") or trigger.get("intent"))


def bind(steps: list[dict[str, Any]], ticket: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The steps with every `{ticket.x}` replaced by the ticket's field; the fields it lacks."""
    missing: list[str] = []
    bound = []
    for step in steps:
        params = {}
        for name, value in step["params"].items():
            if isinstance(value, str):

                def fill(m: re.Match[str]) -> str:
                    got = ticket.get(m.group(1))
                    if not got:
                        missing.append(m.group(1))
                        return m.group(0)
                    return str(got)

                value = PLACEHOLDER.sub(fill, value)
            params[name] = value
        bound.append({**step, "params": params})
    return bound, sorted(set(missing))


def unmet(preconditions: list[Any], ticket: dict[str, Any]) -> list[str]:
    """The preconditions a ticket can be checked against here (fields it must have; others,
    like a target that must exist, the executor checks before the first step)."""
    out = []
    for p in preconditions:
        if isinstance(p, dict) and p.get("kind") == "field" and not ticket.get(p["field"]):
            out.append(p.get("text") or f"ticket has a {p['field']}")
    return out


def checks_of(preconditions: list[Any]) -> dict[int, str]:
    """Steps whose target must be found on the peer before any step of the run changes
    anything: step -> the parameter naming the target."""
    return {
        int(p["step"]): str(p["param"])
        for p in preconditions
        if isinstance(p, dict) and p.get("kind") == "exists"
    }


def blocked_by_policy(
    steps: list[dict[str, Any]], policy: TenantPolicy, *, now: datetime, always_allowed: frozenset[str]
) -> list[str]:
    """Why the steps cannot run unattended: refused, invalid, or needing an approver."""
    out = []
    for n, s in enumerate(steps):
        action = get(s["action"])
        if action is None:
            out.append(f"step {n}: {s['action']} is no longer in the catalogue")
            continue
        try:
            params = action.validate(s["params"]).model_dump()
        except ValueError as exc:
            out.append(f"step {n} ({s['action']}): invalid parameters ({str(exc).splitlines()[0]})")
            continue
        verdict = decide(policy, action, params, now=now, always_allowed=always_allowed)
        if not verdict.allowed:
            out.append(f"step {n} ({s['action']}): refused by {verdict.refused_by}")
        elif verdict.needs_approval:
            out.append(f"step {n} ({s['action']}): needs approval ({verdict.approval_rule})")
    return out


def decide_mode(mode: str, match: Match, blocked: list[str], *, paused: str | None = None) -> tuple[str, str]:
    """(decision, reason): shadow, suggested, ran, paused (recorded, nothing done) or not_run."""
    if paused is not None:
        return "paused", f"the automation is paused ({paused}): nothing was done"
    if mode == "off":
        return "not_run", "rollout mode is off for this category"
    if mode == "shadow":
        return "shadow", "shadow mode: recorded what would have run"
    if match.missing:
        return "suggested", f"the ticket has no {', '.join(match.missing)}: recommended only"
    if match.unmet:
        return "suggested", f"preconditions not met ({'; '.join(match.unmet)}): recommended only"
    if mode == "suggest":
        return "suggested", "suggest mode: an engineer confirms the run"
    if blocked:
        return "suggested", f"the tenant policy does not let it run unattended: {'; '.join(blocked)}"
    return "ran", "auto mode: every step allowed by the tenant policy"
