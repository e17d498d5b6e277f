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
from libs.common.embeddings import shared_embedder
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
