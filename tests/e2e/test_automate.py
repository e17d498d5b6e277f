"""Automate, Maintain, Govern end to end, with real processes (ingest, triage, packet, audit, the
automation API and its executor) and a real Samba AD DC:

an engineer resolves a password-reset ticket through an instruction; a draft appears with its
parameter bound to the ticket's requester; its author's approval is refused and a second
person approves it with a reason; a new similar ticket of the tenant is run automatically in
`auto` mode (the password really changes on the DC, the outcome lands in the PSA) and only
recommended in `suggest` mode; another tenant's identical ticket touches nothing; runs that fail
against the DC (users that do not exist) each get an analysis naming the step, the first a
proposed version, and the third pauses the automation (said in the PSA). Every action is in the
audit trail and the chain verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_resolve import Platform, tools, until
from tests.fakes.psa_sink import psa_sink
from tests.peers import DomainController

pytestmark = pytest.mark.e2e

DESCRIPTION = "forgot the password after the holiday and cannot sign in to the laptop"


@pytest.fixture
def platform(bootstrap: str, pg_url: str, tmp_path: Path) -> Any:
    p = Platform(bootstrap, pg_url, tmp_path, "automate", services=("ingest", "triage", "packet", "audit"))
    yield p
    p.stop()


def post_ticket(p: Platform, t: dict[str, str], ticket_id: str, requester: str, *kinds: str) -> None:
    snap = {
        "ticket_id": ticket_id,
        "title": f"Password reset for {requester}",
        "description": f"{requester} {DESCRIPTION}",
        "requester": requester,
    }
    r = httpx.post(
        f"{p.ingest}/v1/tickets/events/batch",
        headers={"X-API-Key": t["sender"]},
        json={"events": [{"kind": k, "event_ref": f"{ticket_id}-{k}", "ticket": snap} for k in kinds]},
    )
    assert r.status_code == 202, r.text


def rollout(p: Platform, tenant: str, mode: str) -> None:
    r = httpx.put(
        f"{p.started['triage'][1]}/v1/rollout",
        headers=p.operator,
        json={"tenant_id": tenant, "category": "*", "mode": mode},
    )
    assert r.status_code == 200, r.text


def decisions(p: Platform, t: dict[str, str], automation_id: str) -> dict[str, dict[str, Any]]:
    r = p.call(
        "GET", f"/v1/automations/{automation_id}/runs", t["engineer"], params={"tenant_id": t["tenant"]}
    )
    assert r.status_code == 200, r.text
    return {d["ticket_id"]: d for d in r.json()["decisions"]}


def test_a_resolution_becomes_an_approved_automation_that_runs_recommends_fails_and_pauses(
    platform: Platform, dc: DomainController
) -> None:
    p = platform
    a, b = p.tenant("automate"), p.tenant("automate-b")
    tenant = a["tenant"]
    for login in ("mgarcia", "jdoe", "asmith"):
        dc.add_user(login, "Before-Passw0rd!")
    tools(p, a, dc)
    with psa_sink() as (sink, sink_url):
        r = httpx.put(
            f"{p.packet}/v1/psa",
            headers=p.operator,
            json={
                "tenant_id": tenant,
                "kind": "halopsa",
                "base_url": sink_url,
                "credentials": {"token": "t"},
            },
        )
        assert r.status_code == 200, r.text
        _automate(p, a, b, dc, sink)


def _automate(p: Platform, a: dict[str, str], b: dict[str, str], dc: DomainController, sink: Any) -> None:
    tenant = a["tenant"]
    rollout(p, tenant, "shadow")

    # 1. An engineer (here one who may also approve) resolves T-1 through an instruction.
    post_ticket(p, a, "T-1", "mgarcia", "created")
    r = p.call(
        "POST",
        "/v1/instructions",
        a["admin"],
        json={
            "tenant_id": tenant,
            "instruction": "reset her password",
            "ticket": {"ticket_id": "T-1", "requester": "mgarcia", "summary": "Password reset for mgarcia"},
        },
    )
    assert r.status_code == 201, r.text
    plan = r.json()
    assert [s["action"] for s in plan["steps"]] == ["identity.reset_password"]
    r = p.call("POST", f"/v1/plans/{plan['plan_id']}/confirm", a["admin"], json={"tenant_id": tenant})
    assert r.status_code == 200, r.text
    assert p.run_done(tenant, r.json()["run_id"], a["engineer"])["status"] == "succeeded"
    post_ticket(p, a, "T-1", "mgarcia", "resolved")

    # 2. A draft appears, bound to the ticket's requester, and never runs as a draft.
    def draft() -> dict[str, Any] | None:
        listed = p.call("GET", "/v1/automations", a["engineer"], params={"tenant_id": tenant}).json()
        return listed["automations"][0] if listed.get("automations") else None

    made = until(draft, "a draft from the resolution")
    automation_id = made["automation_id"]
    got = p.call(
        "GET", f"/v1/automations/{automation_id}", a["engineer"], params={"tenant_id": tenant}
    ).json()
    (v1,) = got["versions"]
    assert got["status"] == "draft"
    assert [s["action"] for s in v1["steps"]] == ["identity.reset_password"]
    assert v1["steps"][0]["params"]["user"] == "{ticket.requester}", "bound to the ticket, not 'mgarcia'"
    assert v1["trigger"]["intent"] == "password_reset" and v1["source"]["ticket_id"] == "T-1"

    # 3. Its author may not approve it; a second person does, with a reason.
    path = f"/v1/automations/{automation_id}/versions/1/approve"
    refused = p.call("POST", path, a["admin"], json={"tenant_id": tenant, "reason": "my own work"})
    assert refused.status_code == 403 and "author" in refused.text
    ok = p.call(
        "POST", path, a["approver"], json={"tenant_id": tenant, "reason": "routine resets for this client"}
    )
    assert ok.status_code == 200 and ok.json()["status"] == "active", ok.text

    # 4. auto: a similar ticket is run by the automation, against the DC, outcome into the PSA.
    rollout(p, tenant, "auto")
    post_ticket(p, a, "T-2", "jdoe", "created")
    ran = until(lambda: decisions(p, a, automation_id).get("T-2"), "the auto decision on T-2")
    assert ran["decision"] == "ran" and ran["params"][0]["params"]["user"] == "jdoe"
    view = p.run_done(tenant, ran["run_id"], a["engineer"])
    assert view["status"] == "succeeded", view
    password = p.call(
        "GET", f"/v1/runs/{ran['run_id']}/steps/0/password", a["engineer"], params={"tenant_id": tenant}
    ).json()["temporary_password"]
    assert dc.bind("jdoe", password) == (False, "773"), "jdoe's password was reset by the automation"

    def psa_notes(text: str) -> list[str]:
        return [n["body"][0]["note_html"] for n in sink.notes if text in n["body"][0]["note_html"]]

    until(lambda: psa_notes("ran on this ticket: succeeded"), "the auto run's outcome in the PSA")

    # Another tenant's identical ticket (same ticket id) touches nothing of this tenant's.
    rollout(p, b["tenant"], "auto")
    post_ticket(p, b, "T-2", "jdoe", "created")
    post_ticket(p, b, "T-9", "asmith", "created")

    # 5. suggest: recommended only, a plan to confirm, nothing runs.
    rollout(p, tenant, "suggest")
    post_ticket(p, a, "T-3", "asmith", "created")
    suggested = until(lambda: decisions(p, a, automation_id).get("T-3"), "the suggest decision on T-3")
    assert suggested["decision"] == "suggested" and suggested["run_id"] is None and suggested["plan_id"]
    shown = p.call("GET", f"/v1/plans/{suggested['plan_id']}", a["engineer"], params={"tenant_id": tenant})
    assert shown.json()["status"] == "proposed" and shown.json()["steps"][0]["params"]["user"] == "asmith"
    until(lambda: psa_notes(suggested["plan_id"]), "the suggestion in the PSA note")
    assert dc.bind("asmith", "Before-Passw0rd!") == (True, ""), "suggest mode changed nothing"

    # 6. auto again, three tickets for users the DC does not have: analysed, a fix proposed, paused.
    rollout(p, tenant, "auto")
    for n in (1, 2, 3):
        post_ticket(p, a, f"T-F{n}", f"ghost{n}", "created")
        failed = until(lambda n=n: decisions(p, a, automation_id).get(f"T-F{n}"), f"the decision on T-F{n}")
        assert p.run_done(tenant, failed["run_id"], a["engineer"])["status"] == "failed"

    def paused() -> dict[str, Any] | None:
        doc = p.call(
            "GET", f"/v1/automations/{automation_id}", a["engineer"], params={"tenant_id": tenant}
        ).json()
        return doc if doc["status"] == "paused" else None

    doc = until(paused, "the automation paused after three failures")
    assert doc["status_by"] == "service:automation"
    runs = p.call(
        "GET", f"/v1/automations/{automation_id}/runs", a["engineer"], params={"tenant_id": tenant}
    ).json()
    assert len(runs["failures"]) == 3
    for f in runs["failures"]:
        assert f["step"] == 0 and f["action"] == "identity.reset_password" and f["error_class"] == "not_found"
        assert f["analysis"]["category"] == "not_found" and "step 0" in f["analysis"]["cause"]
    assert sorted(f["proposed_version"] or 0 for f in runs["failures"]) == [0, 0, 2]
    v2 = doc["versions"][1]
    assert v2["source"]["kind"] == "failure_analysis" and v2["preconditions"][-1]["kind"] == "exists"
    assert runs["success_rate"] == 0.25 and runs["succeeded_runs"] == 1
    until(lambda: psa_notes("is paused after 3 failed runs"), "the pause in the PSA")

    # Paused, a new matching ticket is recorded as such and not touched.
    post_ticket(p, a, "T-4", "asmith", "created")
    held = until(lambda: decisions(p, a, automation_id).get("T-4"), "the paused decision on T-4")
    assert held["decision"] == "paused" and held["run_id"] is None and held["plan_id"] is None
    assert dc.bind("asmith", "Before-Passw0rd!") == (True, "")

    # The other tenant: nothing of tenant A's ran or was decided for it, nor can it read A's.
    assert (
        p.call("GET", "/v1/automations", b["engineer"], params={"tenant_id": b["tenant"]}).json()[
            "automations"
        ]
        == []
    )
    assert (
        p.call(
            "GET", f"/v1/automations/{automation_id}", b["engineer"], params={"tenant_id": tenant}
        ).status_code
        == 403
    )
    assert (
        p.call(
            "GET", f"/v1/automations/{automation_id}", b["engineer"], params={"tenant_id": b["tenant"]}
        ).status_code
        == 404
    )
    final = decisions(p, a, automation_id)
    assert set(final) == {"T-2", "T-3", "T-F1", "T-F2", "T-F3", "T-4"}, "tenant B's tickets never"
    assert final["T-2"]["run_id"] == ran["run_id"], "tenant B's T-2 started nothing of A's"

    # 7. Govern. An engineer may edit (a new version, not live) but not resume; an approver
    # resumes; the history is mined; the API documents all of it.
    r = p.call(
        "POST",
        f"/v1/automations/{automation_id}/versions",
        a["engineer"],
        json={
            "tenant_id": tenant,
            "reason": "tell the user too",
            "steps": [
                {"action": "identity.reset_password", "params": {"user": "{ticket.requester}"}},
                {"action": "psa.add_note", "params": {"text": "Password reset by the platform"}},
            ],
        },
    )
    assert r.status_code == 200 and r.json()["proposed_version"] == 3, r.text
    v3 = r.json()["versions"][2]
    assert v3["source"] == {"kind": "manual_edit", "reason": "tell the user too"} and "steps" in v3["diff"]
    bad = p.call(
        "POST",
        f"/v1/automations/{automation_id}/versions",
        a["engineer"],
        json={
            "tenant_id": tenant,
            "reason": "typo",
            "steps": [{"action": "identity.reset_pasword", "params": {}}],
        },
    )
    assert bad.status_code == 422 and "no action identity.reset_pasword" in bad.text
    body = {"tenant_id": tenant, "reason": "fix proposed, checking"}
    assert (
        p.call("POST", f"/v1/automations/{automation_id}/resume", a["engineer"], json=body).status_code == 403
    )
    assert (
        p.call("POST", f"/v1/automations/{automation_id}/resume", a["approver"], json=body).status_code == 200
    )
    assert (
        p.call("POST", f"/v1/automations/{automation_id}/pause", a["engineer"], json=body).status_code == 200
    )
    ready = p.call(
        "GET", "/v1/readiness", a["engineer"], params={"tenant_id": tenant, "refresh": "true"}
    ).json()
    assert ready["resolved_tickets"] == 1 and ready["categories"][0]["documented_resolutions"] == 1.0
    cands = p.call("GET", "/v1/candidates", a["engineer"], params={"tenant_id": tenant}).json()
    assert cands["resolved_tickets"] == 1 and cands["candidates"] == [] and not cands["stale"]
    assert p.call("GET", "/v1/candidates", b["engineer"], params={"tenant_id": tenant}).status_code == 403
    paths = httpx.get(f"{p.api}/openapi.json").json()["paths"]
    for route in (
        "/v1/automations",
        "/v1/automations/{automation_id}/versions",
        "/v1/automations/{automation_id}/versions/{version}/approve",
        "/v1/automations/{automation_id}/pause",
        "/v1/automations/{automation_id}/resume",
        "/v1/automations/{automation_id}/retire",
        "/v1/automations/{automation_id}/runs",
        "/v1/candidates",
        "/v1/readiness",
    ):
        assert route in paths, route

    # Retire, with who and why; every step above is in a verifying audit trail.
    r = p.call(
        "POST",
        f"/v1/automations/{automation_id}/retire",
        a["approver"],
        json={"tenant_id": tenant, "reason": "portal"},
    )
    assert r.status_code == 200 and r.json()["status"] == "retired", r.text
    expected = {
        "automation.draft.created",
        "automation.version.approved",
        "automation.rollout.ran",
        "automation.rollout.suggested",
        "automation.run.succeeded",
        "automation.run.failed",
        "automation.version.proposed",
        "automation.paused",
        "automation.active",
        "automation.retired",
    }

    def audited() -> set[str]:
        return {action for action in expected if p.audit(tenant, action)}

    until(lambda: audited() == expected, f"audit events {expected}")
    verify = httpx.get(
        f"{p.audit_url}/v1/audit/verify", params={"tenant_id": tenant}, headers=p.operator
    ).json()
    assert verify["ok"], verify
