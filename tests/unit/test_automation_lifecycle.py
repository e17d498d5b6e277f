"""The pure parts of Automate and Maintain: binding parameters to a new ticket, what each
rollout mode decides, the fix proposed for each kind of failure, leader clustering, variants per
tool kind, and readiness flags."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.automation.maintain import propose_fix
from services.automation.mining import leader_clusters, mine, readiness, variants
from services.automation.policy import TenantPolicy
from services.automation.rollout import (
    Match,
    bind,
    blocked_by_policy,
    checks_of,
    decide_mode,
    trigger_fits,
    unmet,
)

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
RESET = [{"action": "identity.reset_password", "params": {"user": "{ticket.requester}"}}]


def test_binding_fills_ticket_fields_and_names_what_is_missing() -> None:
    steps = [
        *RESET,
        {"action": "rmm.run_script", "params": {"device": "{ticket.device}", "script": "flush_dns"}},
    ]
    bound, missing = bind(steps, {"requester": "jdoe", "device": None})
    assert bound[0]["params"] == {"user": "jdoe"} and missing == ["device"]
    assert bound[1]["params"]["device"] == "{ticket.device}", "left visible, never guessed"
    assert steps[0]["params"]["user"] == "{ticket.requester}", "the version is not changed"


def test_a_trigger_needs_the_same_intent_and_category() -> None:
    trigger = {"intent": "password_reset", "category": "Access"}
    assert trigger_fits(trigger, {"intent": "password_reset", "category": "Access"})
    assert not trigger_fits(trigger, {"intent": "password_reset", "category": "Hardware"})
    assert not trigger_fits(trigger, {"intent": "vpn", "category": "Access"})
    assert not trigger_fits({}, {"intent": "x", "category": "y"}), "an empty trigger matches nothing"


def match(**kw: object) -> Match:
    return Match(automation_id="a", version=1, name="n", similarity=0.9, steps=RESET, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "m", "blocked", "paused", "expected"),
    [
        ("off", match(), [], None, "not_run"),
        ("shadow", match(), [], None, "shadow"),
        ("suggest", match(), [], None, "suggested"),
        ("auto", match(), [], None, "ran"),
        ("auto", match(missing=["requester"]), [], None, "suggested"),
        ("auto", match(unmet=["ticket has a device"]), [], None, "suggested"),
        ("auto", match(), ["step 0: needs approval"], None, "suggested"),
        ("auto", match(), [], "3 failures", "paused"),
    ],
)
def test_each_mode_decides(
    mode: str, m: Match, blocked: list[str], paused: str | None, expected: str
) -> None:
    decision, reason = decide_mode(mode, m, blocked, paused=paused)
    assert decision == expected and reason


def test_policy_blocks_unattended_runs_it_would_not_allow() -> None:
    policy = TenantPolicy(denied_targets={"user": ["admin*"]})
    steps = [
        {"action": "identity.reset_password", "params": {"user": "jdoe"}},
        {"action": "identity.add_to_group", "params": {"user": "jdoe", "group": "Domain Admins"}},
        {"action": "identity.reset_password", "params": {"user": "administrator"}},
    ]
    why = blocked_by_policy(steps, policy, now=NOW, always_allowed=frozenset())
    assert len(why) == 2 and "needs approval" in why[0] and "refused" in why[1]
    assert blocked_by_policy(steps[:1], policy, now=NOW, always_allowed=frozenset()) == []


def test_preconditions_checked_here_and_on_the_peer() -> None:
    pre = [
        {"kind": "field", "field": "device", "text": "ticket has a device"},
        {"kind": "exists", "step": 0, "param": "user"},
    ]
    assert unmet(pre, {"device": None}) == ["ticket has a device"] and unmet(pre, {"device": "PC1"}) == []
    assert checks_of(pre) == {0: "user"}


VERSION = {"trigger": {"intent": "password_reset"}, "steps": RESET, "preconditions": []}


def test_not_found_proposes_a_check_before_anything_runs_once() -> None:
    fix = propose_fix(
        VERSION,
        {
            "step": 0,
            "action": "identity.reset_password",
            "error_class": "not_found",
            "params": {"user": "ghost"},
        },
    )
    assert fix is not None
    change, why = fix
    assert change["preconditions"][-1] == {
        "kind": "exists",
        "step": 0,
        "param": "user",
        "text": "the user of step 0 ({ticket.requester}) exists before any step runs",
    }
    assert "ghost" in why and change["steps"] == RESET
    again = propose_fix(change, {"step": 0, "action": "identity.reset_password", "error_class": "not_found"})
    assert again is None, "the check is there already: the ticket named someone who does not exist"


def test_locked_inserts_an_unlock_and_unsupported_takes_the_tool_variant() -> None:
    fix = propose_fix(VERSION, {"step": 0, "action": "identity.reset_password", "error_class": "locked"})
    assert fix is not None and [s["action"] for s in fix[0]["steps"]] == [
        "identity.unlock_account",
        "identity.reset_password",
    ]
    unlock = {
        **VERSION,
        "steps": [{"action": "identity.unlock_account", "params": {"user": "{ticket.requester}"}}],
    }
    entra = propose_fix(
        unlock,
        {"step": 0, "action": "identity.unlock_account", "error_class": "unsupported"},
        connector_kind="microsoft_graph",
    )
    assert entra is not None and entra[0]["steps"][0]["action"] == "identity.reset_password"
    assert (
        propose_fix(
            unlock,
            {"step": 0, "action": "identity.unlock_account", "error_class": "unsupported"},
            connector_kind="active_directory",
        )
        is None
    )


@pytest.mark.parametrize("error", ["throttled", "auth", "permission", "policy", "unavailable"])
def test_failures_that_are_not_the_versions_fault_propose_nothing(error: str) -> None:
    assert (
        propose_fix(VERSION, {"step": 0, "action": "identity.reset_password", "error_class": error}) is None
    )


def unit(v: list[float]) -> np.ndarray:
    a = np.array(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_leader_clustering_groups_by_meaning_in_arrival_order() -> None:
    rng = np.random.default_rng(7)
    centres = [unit(list(rng.normal(size=16))) for _ in range(3)]
    rows = []
    for i in range(1200):  # more than one chunk
        c = centres[i % 3]
        rows.append(unit(list(c + rng.normal(scale=0.05, size=16))))
    labels = leader_clusters(np.stack(rows), 0.8)
    assert len(set(labels.tolist())) == 3
    assert all(labels[i] == labels[i % 3] for i in range(1200))


def test_mining_ranks_recurring_uncovered_work_and_readiness_flags_what_is_not_ready() -> None:
    rng = np.random.default_rng(3)
    reset, printer, odd = (unit(list(rng.normal(size=16))) for _ in range(3))
    tickets, vectors = [], []
    for i in range(30):
        tickets.append(
            {"ticket_id": f"R{i}", "text": "reset", "category": "Access", "handling_s": 600.0, "steps": None}
        )
        vectors.append(unit(list(reset + rng.normal(scale=0.02, size=16))))
    for i in range(10):
        tickets.append(
            {
                "ticket_id": f"P{i}",
                "text": "printer",
                "category": "Hardware",
                "handling_s": 3600.0,
                "steps": None,
            }
        )
        vectors.append(unit(list(printer + rng.normal(scale=0.02, size=16))))
    for i in range(5):  # the same text under another label: inconsistent
        tickets.append(
            {"ticket_id": f"X{i}", "text": "reset", "category": "Hardware", "handling_s": None, "steps": None}
        )
        vectors.append(unit(list(reset + rng.normal(scale=0.02, size=16))))
    tickets.append({"ticket_id": "O", "text": "odd", "category": "Access", "handling_s": None, "steps": None})
    vectors.append(odd)
    v = np.stack(vectors)
    out = mine(
        tickets,
        v,
        covered=lambda _c, _v: False,
        propose=lambda _t: [{"action": "identity.reset_password", "params": {}}],
    )
    assert out["ranked_by"].startswith("tickets x median handling time")
    top = out["candidates"][0]
    assert (top["category"], top["tickets"]) == ("Hardware", 10), "10 x 1 h outranks 30 x 10 min"
    assert [(c["category"], c["tickets"]) for c in out["candidates"]] == [
        ("Hardware", 10),
        ("Access", 30),
        ("Hardware", 5),
    ], "the mislabelled resets are their own cluster; the odd one out is none"
    assert any(var["kind"] == "microsoft_graph" for var in top["variants"])
    covered = mine(tickets, v, covered=lambda c, _v: c == "Access", propose=lambda _t: [])
    assert all(c["category"] != "Access" for c in covered["candidates"])
    report = readiness(tickets, v, min_volume=20)
    cats = {c["category"]: c for c in report["categories"]}
    assert cats["Access"]["volume"] == 31 and cats["Access"]["near_duplicate_share"] > 0.9
    assert cats["Hardware"]["label_consistency"] is not None and cats["Hardware"]["label_consistency"] < 0.8
    assert report["pilot"]["category"] == "Access"
    assert any(
        n["category"] == "Hardware" and any("labels disagree" in w for w in n["why"])
        for n in report["not_ready"]
    )


def test_variants_show_each_identity_tool_and_what_it_cannot_do() -> None:
    steps = [{"action": "identity.unlock_account", "params": {"user": "{ticket.requester}"}}]
    shown = {v["kind"]: v for v in variants(steps, {"identity": "microsoft_graph"})}
    assert shown["active_directory"]["steps"][0]["runs_as"] == "is"
    assert shown["microsoft_graph"]["steps"][0]["action"] == "identity.reset_password"
    assert shown["microsoft_graph"]["tenant_uses"] and not shown["active_directory"]["tenant_uses"]


def test_a_group_the_ticket_names_is_bound_and_read_from_the_next_ticket_the_same_way() -> None:
    from services.automation.automations import draft_from_runs, group_in
    from services.automation.handlers import fields_of

    source = {
        "title": "Add me to Finance Team",
        "description": "Please add me to the Finance Team group, I started today",
        "requester": "jdoe",
        "intent": "group_access",
        "category": "Access",
    }
    ran = [
        {"steps": [{"action": "identity.add_to_group", "params": {"user": "jdoe", "group": "Finance Team"}}]}
    ]
    draft = draft_from_runs(source, ran)
    assert draft["steps"][0]["params"] == {"user": "{ticket.requester}", "group": "{ticket.group}"}
    assert {"kind": "field", "field": "group", "text": "ticket has a group"} in draft["preconditions"]
    pattern = draft["trigger"]["group_pattern"]
    assert group_in(pattern, "Could you add asmith to the HR Leads group please") == "HR Leads"
    assert group_in(pattern, "My laptop will not start") is None
    new = {"title": "Access", "description": "please add me to the Sales group", "requester": "asmith"}
    bound, missing = bind(draft["steps"], fields_of(new, draft["trigger"]))
    assert bound[0]["params"] == {"user": "asmith", "group": "Sales"} and missing == []
    vague = {"title": "Access", "description": "I need more access", "requester": "asmith"}
    assert bind(draft["steps"], fields_of(vague, draft["trigger"]))[1] == ["group"], "then: suggest only"
    # A group the text does not name stays a literal value.
    other = draft_from_runs({**source, "title": "New starter", "description": "first day"}, ran)
    assert other["steps"][0]["params"]["group"] == "Finance Team" and "group_pattern" not in other["trigger"]
