"""Drafts from resolutions, on PostgreSQL through the service's own handler: a resolved ticket
whose runs succeeded gets one draft (parameters bound to ticket fields, its source recorded),
a redelivered event makes no second one, a ticket without runs none; the draft becomes
version 1 only when someone other than its author approves it, and approving an earlier
version again rolls back."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, select

from libs.common.db import make_engine, migrate
from libs.common.embeddings import shared_embedder
from libs.common.events import (
    Decision,
    EventSource,
    TicketEvent,
    TicketEventPayload,
    TicketSnapshot,
    TicketTriaged,
    TicketTriagedPayload,
    utcnow,
)
from libs.common.settings import REPO_ROOT
from services.automation.automations import Automations, diff
from services.automation.handlers import Lifecycle
from services.automation.tables import automation_versions, outbox, runs
from tests.conftest import unique


class Relay:
    def wake(self) -> None:
        return None


@pytest.fixture
def life(pg_url: str) -> Any:
    migrate(pg_url, REPO_ROOT / "services" / "automation" / "migrations", "automation")
    engine = make_engine(pg_url)
    yield Lifecycle(engine, Relay(), Automations(engine, Relay()), embed=shared_embedder().encode)
    engine.dispose()


@pytest.fixture
def drafts(life: Lifecycle) -> Automations:
    return life.automations


def ticket_event(tenant: str, kind: str, ticket_id: str = "T-7") -> TicketEvent:
    snap = TicketSnapshot(
        ticket_id=ticket_id, title="Locked out again", requester="mgarcia", devices=["ACME-LT-042"]
    )
    return TicketEvent(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=utcnow(),
        source=EventSource(system="psa"),
        payload=TicketEventPayload(kind=kind, ticket=snap),
    )  # type: ignore[arg-type]


def triaged(tenant: str, ticket_id: str = "T-7") -> TicketTriaged:
    decision = Decision(label="Access", confidence=0.9, method="model")
    intent = Decision(label="account_locked", confidence=0.9, method="model")
    return TicketTriaged(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=utcnow(),
        source=EventSource(system="msp.triage"),
        payload=TicketTriagedPayload(
            ticket_id=ticket_id, category=decision, intent=intent, priority=decision
        ),
    )


def a_run(
    drafts: Automations,
    tenant: str,
    steps: list[dict[str, Any]],
    *,
    status: str = "succeeded",
    dry_run: bool = False,
    ticket_id: str = "T-7",
) -> str:
    run_id = str(uuid.uuid4())
    with drafts.engine.begin() as conn:
        conn.execute(
            insert(runs).values(
                run_id=run_id,
                tenant_id=tenant,
                ticket_id=ticket_id,
                requested_by="key:ana",
                steps=json.dumps(steps),
                status=status,
                created_at=utcnow(),
                dry_run=dry_run,
            )
        )
    return run_id


async def test_a_resolution_with_succeeded_runs_becomes_one_draft_bound_to_the_ticket(
    life: Lifecycle, drafts: Automations
) -> None:
    tenant = unique("drafts")
    await life.handle(ticket_event(tenant, "created"))
    await life.handle(triaged(tenant))
    good = a_run(
        drafts,
        tenant,
        [
            {"action": "identity.unlock_account", "params": {"user": "mgarcia"}},
            {"action": "rmm.run_script", "params": {"device": "ACME-LT-042", "script": "flush_dns"}},
        ],
    )
    a_run(drafts, tenant, [{"action": "rmm.reboot_device", "params": {"device": "SRV9"}}], status="failed")
    a_run(drafts, tenant, [{"action": "rmm.reboot_device", "params": {"device": "SRV8"}}], dry_run=True)
    resolved = ticket_event(tenant, "resolved")
    await life.handle(resolved)
    await life.handle(resolved)  # redelivered
    listed = drafts.list(tenant)
    assert len(listed) == 1 and listed[0]["status"] == "draft" and listed[0]["current_version"] is None
    found = drafts.get(tenant, listed[0]["automation_id"])
    assert found is not None
    (v1,) = found["versions"]
    assert v1["steps"] == [
        {"action": "identity.unlock_account", "params": {"user": "{ticket.requester}"}},
        {"action": "rmm.run_script", "params": {"device": "{ticket.device}", "script": "flush_dns"}},
    ], "only the succeeded, real run; literal values bound to the ticket's fields"
    assert v1["trigger"]["intent"] == "account_locked" and v1["trigger"]["category"] == "Access"
    assert v1["source"] == {"kind": "resolution", "ticket_id": "T-7", "run_ids": [good]}
    assert v1["author"] == "key:ana" and v1["diff"] == {"created": True}
    with drafts.engine.connect() as conn:
        audits = [json.loads(r[0]) for r in conn.execute(select(outbox.c.value))]
    assert [a["payload"]["action"] for a in audits if a["tenant_id"] == tenant] == [
        "automation.draft.created"
    ]


async def test_no_runs_no_draft_and_other_tenants_see_nothing(life: Lifecycle, drafts: Automations) -> None:
    tenant, other = unique("quiet"), unique("other")
    await life.handle(ticket_event(tenant, "resolved"))
    assert drafts.list(tenant) == []
    a_run(
        drafts,
        tenant,
        [{"action": "identity.unlock_account", "params": {"user": "mgarcia"}}],
        ticket_id="T-8",
    )
    await life.handle(ticket_event(tenant, "resolved", "T-8"))
    (made,) = drafts.list(tenant)
    assert drafts.list(other) == [] and drafts.get(other, made["automation_id"]) is None
    with pytest.raises(LookupError):
        drafts.approve(other, made["automation_id"], 1, "key:eve", "not mine")


async def test_approval_by_another_person_then_a_rollback(life: Lifecycle, drafts: Automations) -> None:
    tenant = unique("approve")
    a_run(drafts, tenant, [{"action": "identity.unlock_account", "params": {"user": "mgarcia"}}])
    await life.handle(ticket_event(tenant, "resolved"))
    (made,) = drafts.list(tenant)
    automation_id = made["automation_id"]
    with pytest.raises(PermissionError):
        drafts.approve(tenant, automation_id, 1, "key:ana", "my own work")
    live = drafts.approve(tenant, automation_id, 1, "key:bo", "unlocks are routine here")
    assert live["status"] == "active" and live["current_version"] == 1
    # A second version (as an edit writes it), approved, then version 1 approved again.
    v2_steps = [
        {"action": "identity.unlock_account", "params": {"user": "{ticket.requester}"}},
        {"action": "notify.send_sms", "params": {"user": "{ticket.requester}", "text": "unlocked"}},
    ]
    v1 = live["versions"][0]
    with drafts.engine.begin() as conn:
        conn.execute(
            insert(automation_versions).values(
                automation_id=automation_id,
                version=2,
                tenant_id=tenant,
                trigger=json.dumps(v1["trigger"]),
                steps=json.dumps(v2_steps),
                preconditions="[]",
                source=json.dumps({"kind": "manual edit"}),
                diff=json.dumps(diff(v1, {**v1, "steps": v2_steps})),
                author="key:cy",
                created_at=utcnow(),
            )
        )
    assert drafts.approve(tenant, automation_id, 2, "key:bo", "tell them too")["current_version"] == 2
    back = drafts.approve(tenant, automation_id, 1, "key:bo", "the SMS confused people")
    assert back["current_version"] == 1
    assert [(a["version"], a["approver"]) for a in back["approvals"]] == [
        (1, "key:bo"),
        (2, "key:bo"),
        (1, "key:bo"),
    ]
    with drafts.engine.connect() as conn:
        actions = [
            json.loads(r[0])["payload"]["action"]
            for r in conn.execute(select(outbox.c.value))
            if json.loads(r[0])["tenant_id"] == tenant
        ]
    assert actions.count("automation.version.rolled_back") == 1


# --- recommend or run, maintain, govern ---------------------------------------------------------


def reset_ticket(tenant: str, ticket_id: str, requester: str | None, kind: str = "created") -> TicketEvent:
    snap = TicketSnapshot(
        ticket_id=ticket_id,
        title=f"Password reset for {requester or 'a user'}",
        description="User forgot the password and cannot log in",
        requester=requester,
    )
    return TicketEvent(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=utcnow(),
        source=EventSource(system="psa"),
        payload=TicketEventPayload(kind=kind, ticket=snap),  # type: ignore[arg-type]
    )


def reset_triaged(tenant: str, ticket_id: str, mode: str) -> TicketTriaged:
    category = Decision(label="Access", confidence=0.9, method="model")
    intent = Decision(label="password_reset", confidence=0.9, method="model")
    return TicketTriaged(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=utcnow(),
        source=EventSource(system="msp.triage"),
        payload=TicketTriagedPayload(
            ticket_id=ticket_id,
            category=category,
            intent=intent,
            priority=category,
            rollout_mode=mode,  # type: ignore[arg-type]
        ),
    )


async def approved_reset(life: Lifecycle, tenant: str) -> str:
    """A password-reset automation made from ticket R-1's run and approved by a second person."""
    await life.handle(reset_ticket(tenant, "R-1", "mgarcia"))
    await life.handle(reset_triaged(tenant, "R-1", "shadow"))
    a_run(
        life.automations,
        tenant,
        [{"action": "identity.reset_password", "params": {"user": "mgarcia"}}],
        ticket_id="R-1",
    )
    await life.handle(reset_ticket(tenant, "R-1", "mgarcia", kind="resolved"))
    (made,) = life.automations.list(tenant)
    life.automations.approve(tenant, made["automation_id"], 1, "key:bo", "routine resets")
    return str(made["automation_id"])


def staged(life: Lifecycle, tenant: str) -> list[dict[str, Any]]:
    with life.engine.connect() as conn:
        rows = [json.loads(r[0]) for r in conn.execute(select(outbox.c.value).order_by(outbox.c.created_at))]
    return [r for r in rows if r["tenant_id"] == tenant]


async def test_each_rollout_mode_does_what_it_says_once_and_only_in_its_tenant(life: Lifecycle) -> None:
    tenant, other = unique("rollout"), unique("rollout-b")
    automation_id = await approved_reset(life, tenant)
    for ticket_id, requester, mode in (
        ("R-2", "jdoe", "shadow"),
        ("R-3", "asmith", "suggest"),
        ("R-4", "kwong", "auto"),
        ("R-5", None, "auto"),  # no requester: recommended only
    ):
        await life.handle(reset_ticket(tenant, ticket_id, requester))
        await life.handle(reset_triaged(tenant, ticket_id, mode))
        await life.handle(reset_triaged(tenant, ticket_id, mode))  # redelivered
    # The same ticket text in another tenant matches nothing there.
    await life.handle(reset_ticket(other, "R-4", "kwong"))
    await life.handle(reset_triaged(other, "R-4", "auto"))
    # An unrelated ticket of the tenant (other intent) is not matched either.
    unrelated = reset_triaged(tenant, "R-6", "auto")
    unrelated = unrelated.model_copy(
        update={
            "payload": unrelated.payload.model_copy(
                update={"intent": Decision(label="vpn_issue", confidence=0.9, method="model")}
            )
        }
    )
    await life.handle(reset_ticket(tenant, "R-6", "lee"))
    await life.handle(unrelated)

    found = life.automations.runs(tenant, automation_id)
    by_ticket = {d["ticket_id"]: d for d in found["decisions"]}
    assert sorted(by_ticket) == ["R-2", "R-3", "R-4", "R-5"], "one decision per matching ticket, none twice"
    assert by_ticket["R-2"]["decision"] == "shadow" and by_ticket["R-2"]["run_id"] is None
    assert by_ticket["R-3"]["decision"] == "suggested" and by_ticket["R-3"]["plan_id"]
    assert by_ticket["R-4"]["decision"] == "ran" and by_ticket["R-4"]["run_id"]
    assert by_ticket["R-5"]["decision"] == "suggested" and "requester" in by_ticket["R-5"]["reason"]
    assert by_ticket["R-4"]["params"] == [{"action": "identity.reset_password", "params": {"user": "kwong"}}]
    assert all(d["similarity"] >= 0.6 for d in by_ticket.values())

    events = staged(life, tenant)
    runs_out = [e for e in events if e["type"] == "automation.run.v1"]
    auto = [r for r in runs_out if r["payload"]["automation_id"] == automation_id]
    assert (
        len(auto) == 1 and auto[0]["payload"]["ticket_id"] == "R-4" and auto[0]["payload"]["mode"] == "auto"
    )
    assert auto[0]["payload"]["approved_by"] == "key:bo"
    notes = [r for r in runs_out if r["payload"]["steps"][0]["action"] == "psa.add_note"]
    assert sorted(n["payload"]["ticket_id"] for n in notes) == ["R-3", "R-5"], (
        "suggestions go into the ticket"
    )
    assert (
        by_ticket["R-3"]["plan_id"] in notes[0]["payload"]["steps"][0]["params"]["text"]
        or by_ticket["R-3"]["plan_id"] in notes[1]["payload"]["steps"][0]["params"]["text"]
    )
    audited = [e["payload"]["action"] for e in events if e["type"] == "audit.event.v1"]
    for decision in ("shadow", "suggested", "ran"):
        assert f"automation.rollout.{decision}" in audited
    assert (
        life.automations.list(other) == []
        and [e for e in staged(life, other) if e["type"] == "automation.run.v1"] == []
    ), "another tenant's ticket never runs this tenant's automation"

    # Paused or retired, it matches nothing.
    life.automations.set_status(tenant, automation_id, "retire", "key:bo", "replaced by the portal")
    await life.handle(reset_ticket(tenant, "R-7", "pat"))
    await life.handle(reset_triaged(tenant, "R-7", "auto"))
    assert "R-7" not in {d["ticket_id"] for d in life.automations.runs(tenant, automation_id)["decisions"]}
    with pytest.raises(ValueError):
        life.automations.approve(tenant, automation_id, 1, "key:cy", "bring it back")


def failed_result(tenant: str, run: dict[str, Any], error: str, message: str) -> Any:
    from libs.common.events import AutomationResult, AutomationResultPayload, StepResult

    step = run["payload"]["steps"][0]
    return AutomationResult(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=utcnow(),
        source=EventSource(system="msp.automation"),
        payload=AutomationResultPayload(
            run_id=run["payload"]["run_id"],
            outcome="failed",
            ticket_id=run["payload"]["ticket_id"],
            requested_by=run["payload"]["requested_by"],
            steps=[
                StepResult(
                    index=0,
                    action=step["action"],
                    outcome="failed",
                    error_class=error,
                    message=message,
                    params=step["params"],
                )
            ],
        ),
    )


async def test_failures_are_analysed_a_fix_is_proposed_once_and_the_third_pauses(life: Lifecycle) -> None:
    tenant = unique("maintain")
    automation_id = await approved_reset(life, tenant)
    for n, user in enumerate(("ghost1", "ghost2", "ghost3")):
        await life.handle(reset_ticket(tenant, f"F-{n}", user))
        await life.handle(reset_triaged(tenant, f"F-{n}", "auto"))
    runs_out = [
        e
        for e in staged(life, tenant)
        if e["type"] == "automation.run.v1" and e["payload"]["automation_id"] == automation_id
    ]
    assert len(runs_out) == 3
    for run in runs_out:
        result = failed_result(
            tenant, run, "not_found", f"no user {run['payload']['steps'][0]['params']['user']!r}"
        )
        await life.handle(result)
        await life.handle(result)  # redelivered: nothing doubles
    found = life.automations.runs(tenant, automation_id)
    assert len(found["failures"]) == 3
    first = min(found["failures"], key=lambda f: f["created_at"])
    assert first["step"] == 0 and first["action"] == "identity.reset_password"
    assert first["analysis"]["category"] == "not_found" and "step 0" in first["analysis"]["cause"]
    assert first["proposed_version"] == 2
    assert [f["proposed_version"] for f in found["failures"]].count(2) == 1, "the same fix is proposed once"
    whole = life.automations.get(tenant, automation_id)
    assert whole is not None and whole["status"] == "paused" and whole["status_by"] == "service:automation"
    v2 = whole["versions"][1]
    assert v2["source"]["kind"] == "failure_analysis" and v2["author"] == "service:automation"
    assert {"kind": "exists", "step": 0, "param": "user"}.items() <= v2["preconditions"][-1].items()
    assert "preconditions" in v2["diff"] and whole["current_version"] == 1, "proposed, not live"
    notes = [
        e["payload"]["steps"][0]["params"]["text"]
        for e in staged(life, tenant)
        if e["type"] == "automation.run.v1" and e["payload"]["steps"][0]["action"] == "psa.add_note"
    ]
    assert sum("failed at step 0" in n for n in notes) == 3 and sum("is paused" in n for n in notes) == 1
    # Paused: a new matching ticket is recorded, not run; resumed (by an approver) with the fix
    # approved, it is.
    await life.handle(reset_ticket(tenant, "F-9", "real.user"))
    await life.handle(reset_triaged(tenant, "F-9", "auto"))
    held = {d["ticket_id"]: d for d in life.automations.runs(tenant, automation_id)["decisions"]}["F-9"]
    assert held["decision"] == "paused" and held["run_id"] is None
    life.automations.approve(tenant, automation_id, 2, "key:bo", "check the user first")
    life.automations.set_status(tenant, automation_id, "resume", "key:bo", "fix approved")
    await life.handle(reset_ticket(tenant, "F-10", "real.user"))
    await life.handle(reset_triaged(tenant, "F-10", "auto"))
    (ran,) = [
        e
        for e in staged(life, tenant)
        if e["type"] == "automation.run.v1" and e["payload"]["ticket_id"] == "F-10"
    ]
    assert ran["payload"]["automation_version"] == 2 and ran["payload"]["checks"] == {"0": "user"}
    audited = [e["payload"]["action"] for e in staged(life, tenant) if e["type"] == "audit.event.v1"]
    for action in (
        "automation.run.failed",
        "automation.version.proposed",
        "automation.paused",
        "automation.active",
    ):
        assert action in audited, action


async def test_a_resolution_written_in_notes_becomes_a_draft(life: Lifecycle) -> None:
    from libs.common.events import TicketNote

    tenant = unique("notes")
    await life.handle(reset_ticket(tenant, "N-1", "mgarcia"))
    note = reset_ticket(tenant, "N-1", "mgarcia", kind="note_added")
    note = note.model_copy(
        update={
            "payload": note.payload.model_copy(
                update={
                    "note": TicketNote(
                        note_id="n1", text="Unlocked mgarcia's account and reset the password.", author="ana"
                    )
                }
            )
        }
    )
    await life.handle(note)
    await life.handle(note)  # redelivered: the note is kept once
    await life.handle(reset_ticket(tenant, "N-1", "mgarcia", kind="resolved"))
    (made,) = life.automations.list(tenant)
    found = life.automations.get(tenant, made["automation_id"])
    assert found is not None
    (v1,) = found["versions"]
    assert v1["source"]["kind"] == "notes" and v1["author"] == "ana"
    assert [s["action"] for s in v1["steps"]] == ["identity.unlock_account", "identity.reset_password"]
    assert all(s["params"].get("user") == "{ticket.requester}" for s in v1["steps"])
    # A second ticket resolved the same way adds no second, identical draft.
    await life.handle(reset_ticket(tenant, "N-2", "jdoe"))
    note2 = note.model_copy(
        update={
            "payload": note.payload.model_copy(
                update={
                    "ticket": note.payload.ticket.model_copy(
                        update={"ticket_id": "N-2", "requester": "jdoe"}
                    ),
                    "note": TicketNote(note_id="n2", text="Unlocked jdoe's account and reset the password."),
                }
            )
        }
    )
    await life.handle(note2)
    await life.handle(reset_ticket(tenant, "N-2", "jdoe", kind="resolved"))
    assert len(life.automations.list(tenant)) == 1


async def test_with_claude_the_notes_steps_come_from_extract_steps_and_nothing_made_up(pg_url: str) -> None:
    """Claude's `extract_steps` through the real SDK against a Messages API server on loopback:
    it is offered the catalogue's names, its steps become the draft, bound to the ticket, and a
    step with a value the notes and the ticket never mention is left out."""
    from libs.common.events import TicketNote
    from libs.common.llm import Claude, ClaudeConfig
    from libs.common.reasoning import LocalReasoner, Reasoning
    from tests.messages_server import messages_server

    migrate(pg_url, REPO_ROOT / "services" / "automation" / "migrations", "automation")
    engine = make_engine(pg_url)
    with messages_server() as (srv, url):
        srv.script = [
            {
                "input": {
                    "steps": [
                        {"action": "identity.reset_password", "params": {"user": "mgarcia"}, "why": "notes"},
                        {
                            "action": "identity.add_to_group",
                            "params": {"user": "mgarcia", "group": "Domain Admins"},
                            "why": "invented",
                        },
                    ]
                }
            }
        ]
        claude = Claude(ClaudeConfig(api_key="sk-test", model="claude-test", base_url=url))  # type: ignore[arg-type]
        embed = shared_embedder().encode
        life = Lifecycle(
            engine,
            Relay(),
            Automations(engine, Relay()),
            embed=embed,
            reasoning=Reasoning(claude, LocalReasoner(embed)),
        )
        tenant = unique("claude-notes")
        await life.handle(reset_ticket(tenant, "C-1", "mgarcia"))
        note = reset_ticket(tenant, "C-1", "mgarcia", kind="note_added")
        note = note.model_copy(
            update={
                "payload": note.payload.model_copy(
                    update={
                        "note": TicketNote(
                            note_id="c1", text="Reset mgarcia's password by phone.", author="ana"
                        )
                    }
                )
            }
        )
        await life.handle(note)
        await life.handle(reset_ticket(tenant, "C-1", "mgarcia", kind="resolved"))
        asked = json.dumps(srv.requests[0]["body"])
        assert "identity.reset_password" in asked and "Reset mgarcia's password by phone." in asked
    (made,) = life.automations.list(tenant)
    found = life.automations.get(tenant, made["automation_id"])
    assert found is not None
    (v1,) = found["versions"]
    assert v1["source"]["kind"] == "notes"
    assert [(s["action"], s["params"]["user"]) for s in v1["steps"]] == [
        ("identity.reset_password", "{ticket.requester}")
    ]
    engine.dispose()
