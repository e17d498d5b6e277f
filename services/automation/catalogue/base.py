"""What an action is: the contract between a plan, the policy, the executor and a connector.

An action names one change in one kind of system (`identity.reset_password`), with typed
parameters (a pydantic model, whose JSON Schema the API shows), a risk level, the scope a
tenant grants for it, whether it can be undone, and the words engineers use for it (the local
interpreter's key phrases). It does not know how a system does it: a connector of the kind
the tenant's tool map names does (see `connectors/`).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

Risk = Literal["low", "medium", "high"]
# The kinds of system an action runs against; a tenant's tool map picks the connector for each.
System = Literal["identity", "aws", "m365", "teams", "sms", "rmm", "psa"]


class Params(BaseModel):
    """Base of every action's parameters: unknown names are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


@dataclass(frozen=True)
class Action:
    name: str
    system: System
    description: str
    params: type[Params]
    risk: Risk
    scope: str
    reversible: bool
    # Words engineers write for it: regular expressions over a lower-cased clause, quoted text
    # masked. The local interpreter's key phrases, and examples for the embedding match.
    cues: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    # Parameters that may name several values in one clause ("lchen and mpatel"): one step each.
    repeatable: tuple[str, ...] = ()
    # Which parameter names the thing changed (for policy patterns and the audit).
    target: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self, params: dict[str, Any]) -> Params:
        return self.params.model_validate(params)

    def schema(self) -> dict[str, Any]:
        return self.params.model_json_schema()

    def defaults(self) -> dict[str, Any]:
        return {
            name: f.default
            for name, f in self.params.model_fields.items()
            if not f.is_required() and f.default is not None
        }

    def required(self) -> list[str]:
        return [name for name, f in self.params.model_fields.items() if f.is_required()]

    def describe(self) -> dict[str, Any]:
        return {
            "action": self.name,
            "system": self.system,
            "description": self.description,
            "risk": self.risk,
            "scope": self.scope,
            "reversible": self.reversible,
            "dry_run": True,
            "params_schema": self.schema(),
        }


def idempotency_key(run_id: uuid.UUID | str, step: int) -> str:
    """The key a step runs under: the same (run, step) always gives the same key, so the
    executor, its ledger and a connector that supports keys see one effect per step."""
    return hashlib.sha256(f"msp-step\n{run_id}\n{step}".encode()).hexdigest()[:32]


def param_errors(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()]
