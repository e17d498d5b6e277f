"""Maintain: from a failed automation run and its analysis, the changed version to propose.

Pure. The change depends on what failed, never on the automation's name or the tenant:
- the target was not found → a precondition that the step's target exists, checked on the peer
  before any step of the run changes anything (so the next such ticket fails safely, at once,
  and says which value was not found);
- the account was locked → a step that unlocks it before the failing step;
- the tenant's system cannot do the step (`unsupported`) → the step for the client's tool
  variant where the catalogue has one;
- a ticket field the step needs was empty → a precondition that the ticket has it.
Everything else (throttling, credentials, permissions, a policy refusal) is not the version's
fault: the analysis says what to do and no version is proposed.
"""

from __future__ import annotations

import copy
from typing import Any

from services.automation.catalogue import get

# The step that does the same job where the client's system cannot run the original, per
# connector kind: Entra ID has no unlock (smart lockout clears when the password is reset).
VARIANTS: dict[tuple[str, str], str] = {
    ("microsoft_graph", "identity.unlock_account"): "identity.reset_password",
}
# The parameter that names a step's target, in the order they are looked for.
TARGETS = ("user", "iam_user", "group", "device", "mailbox")


def target_param(action: str, params: dict[str, Any]) -> str | None:
    spec = get(action)
    names = list(spec.params.model_fields) if spec is not None else list(params)
    return next((n for n in TARGETS if n in names and n in params), None)


def propose_fix(
    version: dict[str, Any],
    failure: dict[str, Any],
    *,
    connector_kind: str | None = None,
) -> tuple[dict[str, Any], str] | None:
    """(the new trigger/steps/preconditions, what changed and why) or None.

    `version`: the failing version's trigger, steps, preconditions. `failure`: step (index),
    action, error_class, message, params (as run)."""
    step = int(failure["step"])
    steps = copy.deepcopy(version["steps"])
    preconditions = copy.deepcopy(version["preconditions"])
    error = failure.get("error_class") or ""
    if not 0 <= step < len(steps):
        return None
    action = steps[step]["action"]
    new: dict[str, Any] | None = None
    why = ""
    if error == "not_found":
        name = target_param(action, steps[step]["params"])
        known = any(
            isinstance(p, dict) and p.get("kind") == "exists" and p.get("step") == step for p in preconditions
        )
        if name is not None and not known:
            source = steps[step]["params"][name]
            preconditions.append(
                {
                    "kind": "exists",
                    "step": step,
                    "param": name,
                    "text": f"the {name} of step {step} ({source}) exists before any step runs",
                }
            )
            new = {"steps": steps, "preconditions": preconditions}
            why = (
                f"step {step} ({action}) found no {name} {failure.get('params', {}).get(name)!r}: "
                f"check that the {name} exists before changing anything, so such a ticket fails at "
                "once and safely"
            )
    elif error == "locked" and get("identity.unlock_account") is not None:
        user = steps[step]["params"].get("user")
        before = steps[step - 1] if step > 0 else None
        if user and not (before and before["action"] == "identity.unlock_account"):
            steps.insert(step, {"action": "identity.unlock_account", "params": {"user": user}})
            for p in preconditions:
                if isinstance(p, dict) and isinstance(p.get("step"), int) and p["step"] >= step:
                    p["step"] += 1
            new = {"steps": steps, "preconditions": preconditions}
            why = f"step {step} ({action}) failed because the account was locked: unlock it first"
    elif error == "unsupported" and connector_kind:
        variant = VARIANTS.get((connector_kind, action))
        if variant is not None:
            spec = get(variant)
            assert spec is not None
            fields = set(spec.params.model_fields)
            steps[step] = {
                "action": variant,
                "params": {k: v for k, v in steps[step]["params"].items() if k in fields},
            }
            new = {"steps": steps, "preconditions": preconditions}
            why = f"{connector_kind} cannot run {action}: {variant} does the job on that system"
    elif error == "invalid_input":
        for name, value in steps[step]["params"].items():
            if (
                isinstance(value, str)
                and value.startswith("{ticket.")
                and not failure.get("params", {}).get(name)
            ):
                field = value[len("{ticket.") : -1]
                if not any(isinstance(p, dict) and p.get("field") == field for p in preconditions):
                    preconditions.append({"kind": "field", "field": field, "text": f"ticket has a {field}"})
                    new = {"steps": steps, "preconditions": preconditions}
                    why = f"step {step} ({action}) ran with an empty {name}: require the ticket's {field}"
    if new is None:
        return None
    return {"trigger": version["trigger"], **new}, why
