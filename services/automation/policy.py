"""A tenant's policy for actions: what may run at all, what needs a second person, on which
targets, and when. Pure logic: `decide` says, for one step, whether it may run, whether it
needs approval, and which rule said so.

Patterns are shell-style (`VPN-*`, `*@acme.example`), compared without regard to case.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import datetime, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from libs.common.jsontypes import Bool, ClockTime, Int, RequestBody, json_number
from services.automation.catalogue import Action

# Targets that make an otherwise routine step high-risk.
ADMIN_GROUPS = ["*admin*", "*administrators*", "*-priv*", "*privileged*"]
SERVERS = ["*srv*", "*sql*", "dc*", "fs*", "rds*", "*-sv*", "*server*", "exch*", "hv*"]


class ApprovalRule(RequestBody):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(description="action name or pattern, e.g. identity.* ")
    when: dict[str, list[str]] = Field(
        default_factory=dict, description="parameter -> patterns; the rule applies when one matches"
    )
    name: str = ""


Weekday = Annotated[int, Ge(0), Le(6), BeforeValidator(json_number)]  # 0 = Monday


def _zones(schema: dict[str, Any]) -> None:
    schema["enum"] = sorted(available_timezones())


class Window(RequestBody):
    model_config = ConfigDict(extra="forbid")
    actions: list[str] = Field(description="action patterns this window applies to")
    days: list[Annotated[int, Ge(0), Le(6), BeforeValidator(json_number)]] = Field(
        default=[0, 1, 2, 3, 4], description="0 = Monday"
    )
    start: ClockTime = time(7, 0)
    end: ClockTime = time(19, 0)
    timezone: str = Field(default="UTC", json_schema_extra=_zones)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


def default_approval_rules() -> list[ApprovalRule]:
    return [
        ApprovalRule(action="identity.add_to_group", when={"group": ADMIN_GROUPS}, name="admin group"),
        ApprovalRule(action="identity.disable_account", name="disabling an account"),
        ApprovalRule(action="rmm.reboot_device", when={"device": SERVERS}, name="rebooting a server"),
        ApprovalRule(action="rmm.restart_service", when={"device": SERVERS}, name="a service on a server"),
        ApprovalRule(action="aws.attach_policy", name="granting an AWS policy"),
    ]


def _action_patterns(schema: dict[str, Any]) -> None:
    """The schema of `allowed_actions`: a pattern with a wildcard, or a name in the catalogue."""
    from services.automation.catalogue import catalogue

    names = "|".join(re.escape(n) for n in sorted(catalogue()))
    schema["items"] = {"type": "string", "pattern": rf"^(.*\*.*|{names})$"}


class TenantPolicy(RequestBody):
    model_config = ConfigDict(extra="forbid")
    allowed_actions: list[str] = Field(
        default=["*"],
        description="action patterns this tenant allows: a catalogue name, or a pattern with *",
        json_schema_extra=_action_patterns,
    )
    approval_rules: list[ApprovalRule] = Field(default_factory=default_approval_rules)
    # Every high-risk action needs approval whatever the rules say.
    approve_high_risk: Bool = True
    # parameter -> patterns a value must match (e.g. {"group": ["VPN-*"], "device": ["ACME-*"]}).
    allowed_targets: dict[str, list[str]] = Field(default_factory=dict)
    denied_targets: dict[str, list[str]] = Field(default_factory=dict)
    windows: list[Window] = Field(default_factory=list)
    approval_ttl_s: Int = Field(default=4 * 3600, ge=60, le=7 * 24 * 3600)
    # An approved automation that fails this many runs in a row is paused until someone resumes it.
    pause_after_failures: Int = Field(default=3, ge=1, le=100)


class Decision(BaseModel):
    allowed: Bool
    refused_by: str | None = None
    needs_approval: Bool = False
    approval_rule: str | None = None
    always_allowed: Bool = False


def _match(value: Any, patterns: list[str]) -> bool:
    text = str(value).lower()
    return any(fnmatch.fnmatchcase(text, p.lower()) for p in patterns)


def decide(
    policy: TenantPolicy,
    action: Action,
    params: dict[str, Any],
    *,
    now: datetime,
    always_allowed: frozenset[str] = frozenset(),
) -> Decision:
    if not _match(action.name, policy.allowed_actions):
        return Decision(
            allowed=False, refused_by=f"allowed_actions: {action.name} is not allowed for this tenant"
        )
    for name, value in params.items():
        if value is None:
            continue
        if name in policy.denied_targets and _match(value, policy.denied_targets[name]):
            return Decision(allowed=False, refused_by=f"denied_targets.{name}: {value!r} is denied")
        if name in policy.allowed_targets and not _match(value, policy.allowed_targets[name]):
            return Decision(
                allowed=False,
                refused_by=f"allowed_targets.{name}: {value!r} matches none of "
                f"{policy.allowed_targets[name]}",
            )
    for n, window in enumerate(policy.windows):
        if not _match(action.name, window.actions):
            continue
        local = now.astimezone(ZoneInfo(window.timezone))
        inside = local.weekday() in window.days and window.start <= local.time() < window.end
        if not inside:
            return Decision(
                allowed=False,
                refused_by=f"windows[{n}]: {action.name} runs only {window.start:%H:%M}-{window.end:%H:%M} "
                f"{window.timezone} on days {window.days} (now {local:%a %H:%M})",
            )
    rule = approval_rule(policy, action, params)
    if rule is not None and action.name in always_allowed:
        return Decision(allowed=True, always_allowed=True, approval_rule=rule)
    return Decision(allowed=True, needs_approval=rule is not None, approval_rule=rule)


def approval_rule(policy: TenantPolicy, action: Action, params: dict[str, Any]) -> str | None:
    if policy.approve_high_risk and action.risk == "high":
        return f"high risk: {action.name}"
    for rule in policy.approval_rules:
        if not _match(action.name, [rule.action]):
            continue
        if not rule.when or any(
            name in params and _match(params[name], patterns) for name, patterns in rule.when.items()
        ):
            return rule.name or f"approval rule for {rule.action}"
    return None


Verdict = Literal["runnable", "needs approval", "refused", "incomplete"]
