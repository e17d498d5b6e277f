"""Tenant policy: refused steps name the rule that refused them; high-risk steps need a second
person unless an approver marked the action always allowed; working hours hold."""

from __future__ import annotations

from datetime import UTC, datetime, time

from services.automation.catalogue import get
from services.automation.policy import TenantPolicy, Window, decide

MONDAY_NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SATURDAY = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def action(name: str):  # type: ignore[no-untyped-def]
    found = get(name)
    assert found is not None
    return found


def test_defaults_ask_a_second_person_for_the_risky_steps_only() -> None:
    p = TenantPolicy()
    admin = decide(
        p, action("identity.add_to_group"), {"user": "a", "group": "Domain Admins"}, now=MONDAY_NOON
    )
    vpn = decide(p, action("identity.add_to_group"), {"user": "a", "group": "VPN-Users"}, now=MONDAY_NOON)
    disable = decide(p, action("identity.disable_account"), {"user": "a"}, now=MONDAY_NOON)
    server = decide(p, action("rmm.reboot_device"), {"device": "FIN-SRV-02"}, now=MONDAY_NOON)
    laptop = decide(p, action("rmm.reboot_device"), {"device": "FIN-LT-02"}, now=MONDAY_NOON)
    assert admin.needs_approval and disable.needs_approval and server.needs_approval
    assert not vpn.needs_approval and not laptop.needs_approval
    assert admin.approval_rule == "admin group"


def test_refusals_name_their_rule() -> None:
    p = TenantPolicy(
        allowed_actions=["identity.*", "rmm.run_script"],
        allowed_targets={"group": ["VPN-*"]},
        denied_targets={"user": ["svc-*"]},
    )
    assert "allowed_actions" in str(decide(p, action("aws.attach_policy"), {}, now=MONDAY_NOON).refused_by)
    assert "allowed_targets.group" in str(
        decide(
            p, action("identity.add_to_group"), {"user": "a", "group": "Finance-RW"}, now=MONDAY_NOON
        ).refused_by
    )
    assert "denied_targets.user" in str(
        decide(p, action("identity.unlock_account"), {"user": "svc-backup"}, now=MONDAY_NOON).refused_by
    )
    assert decide(
        p, action("identity.add_to_group"), {"user": "a", "group": "vpn-users"}, now=MONDAY_NOON
    ).allowed


def test_working_hours() -> None:
    p = TenantPolicy(
        windows=[Window(actions=["rmm.*"], start=time(8), end=time(18), timezone="Europe/London")]
    )
    assert decide(p, action("rmm.reboot_device"), {"device": "LT-1"}, now=MONDAY_NOON).allowed
    weekend = decide(p, action("rmm.reboot_device"), {"device": "LT-1"}, now=SATURDAY)
    assert not weekend.allowed and "windows[0]" in str(weekend.refused_by)
    assert decide(p, action("identity.unlock_account"), {"user": "a"}, now=SATURDAY).allowed


def test_always_allowed_skips_approval_but_not_refusals() -> None:
    p = TenantPolicy(denied_targets={"user": ["ceo*"]})
    always = frozenset({"identity.disable_account"})
    ok = decide(
        p, action("identity.disable_account"), {"user": "temp1"}, now=MONDAY_NOON, always_allowed=always
    )
    assert ok.allowed and not ok.needs_approval and ok.always_allowed
    no = decide(
        p, action("identity.disable_account"), {"user": "ceo"}, now=MONDAY_NOON, always_allowed=always
    )
    assert not no.allowed
