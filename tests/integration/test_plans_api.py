"""Plans through the automation API's own logic on PostgreSQL: an approval that expires means
not approved, the approver is never the asker, "always allowed" (granted and revoked), answers
to a plan's questions, and a step the policy refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import HTTPException
from sqlalchemy import select

from libs.common.access import Access
from libs.common.crypto import SecretBox, new_key
from libs.common.db import make_engine, migrate
from libs.common.reasoning import LocalReasoner, Reasoning
from libs.common.settings import REPO_ROOT
from services.automation import store
from services.automation.api import AutomationApi, ConfirmIn, DecisionIn, InstructionIn
from services.automation.interpret import LocalInterpreter
from services.automation.planner import Planner, TicketIn
from services.automation.policy import TenantPolicy
from services.automation.settings import AutomationSettings
from services.automation.tables import outbox
from tests.conftest import unique


class Relay:
    def wake(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 10, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def api(pg_url: str) -> Any:
    migrate(pg_url, REPO_ROOT / "services" / "automation" / "migrations", "automation")
    engine = make_engine(pg_url)
    clock = Clock()
    planner = Planner(Reasoning(None, LocalReasoner()), LocalInterpreter())
    yield AutomationApi(
        settings=AutomationSettings(),
        engine=engine,
        box=SecretBox(new_key()),
        planner=planner,
        relay=Relay(),
        secret=b"x" * 32,
        clock=clock,
    )  # type: ignore[arg-type]
    engine.dispose()


def key(tenant: str, role: str, person: str) -> Access:
    return Access(kind="key", tenant_id=tenant, key_id=person, role=role, label=person)


def audited(api: AutomationApi, action: str) -> list[dict[str, Any]]:
    with api.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.value).where(outbox.c.topic.like("%audit.events.v1"))).all()
    docs = [json.loads(r[0]) for r in rows]
    return [d for d in docs if d["payload"]["action"] == action]


async def propose(api: AutomationApi, tenant: str, text: str, who: Access, **ticket: Any) -> dict[str, Any]:
    return await api.propose(
        InstructionIn(tenant_id=tenant, instruction=text, ticket=TicketIn(**ticket)), who
    )


async def test_an_expired_approval_request_is_not_approved(api: AutomationApi) -> None:
    tenant = unique("expiry")
    ana, bo = key(tenant, "engineer", "ana"), key(tenant, "approver", "bo")
    plan = await propose(api, tenant, "disable the account", ana, requester="leaver1")
    assert plan["steps"][0]["status"] == "needs approval"
    waiting = await api.confirm(plan["plan_id"], ConfirmIn(tenant_id=tenant), ana)
    assert waiting["status"] == "awaiting approval"
    api.clock.now += timedelta(hours=4, seconds=1)  # type: ignore[attr-defined]
    with pytest.raises(HTTPException) as expired:
        await api.approve(
            plan["plan_id"], DecisionIn(tenant_id=tenant, reason="late but fine"), bo, approve=True
        )
    assert expired.value.status_code == 409 and "expired" in str(expired.value.detail)
    assert store.get_plan(api.engine, tenant, plan["plan_id"])["status"] == "expired"  # type: ignore[index]
    assert audited(api, "automation.approval.expired")


async def test_the_approver_is_never_the_person_who_asked(api: AutomationApi) -> None:
    tenant = unique("four-eyes")
    bo = key(tenant, "approver", "bo")
    plan = await propose(api, tenant, "add jdoe to Domain Admins", bo)
    await api.confirm(plan["plan_id"], ConfirmIn(tenant_id=tenant), bo)
    with pytest.raises(HTTPException) as own:
        await api.approve(plan["plan_id"], DecisionIn(tenant_id=tenant, reason="trust me"), bo, approve=True)
    assert own.value.status_code == 403
    other = key(tenant, "admin", "cy")
    ran = await api.approve(
        plan["plan_id"], DecisionIn(tenant_id=tenant, reason="change ticket 42"), other, approve=True
    )
    assert ran["status"] == "running"
    run = store.get_run(api.engine, tenant, ran["run_id"])
    assert run is not None and run["requested_by"] == "key:bo" and run["approved_by"] == "key:cy"


async def test_always_allowed_is_granted_and_revoked_by_an_approver(api: AutomationApi) -> None:
    tenant = unique("always")
    ana, bo = key(tenant, "engineer", "ana"), key(tenant, "approver", "bo")
    reason = DecisionIn(tenant_id=tenant, reason="leavers are disabled by L1 at this client")
    assert store.set_always_allowed(
        api.engine, tenant, "identity.disable_account", by=bo.person, reason=reason.reason, on=True, events=[]
    )
    plan = await propose(api, tenant, "disable the account", ana, requester="leaver2")
    assert plan["steps"][0]["status"] == "runnable" and plan["steps"][0]["always_allowed"]
    assert store.set_always_allowed(
        api.engine, tenant, "identity.disable_account", by=bo.person, reason="revoked", on=False, events=[]
    )
    again = await propose(api, tenant, "disable the account", ana, requester="leaver2")
    assert again["steps"][0]["status"] == "needs approval"


async def test_a_question_is_answered_when_confirming(api: AutomationApi) -> None:
    tenant = unique("question")
    ana = key(tenant, "engineer", "ana")
    plan = await propose(api, tenant, "reboot the machine", ana)
    assert plan["steps"][0]["missing"] == ["device"] and plan["questions"]
    with pytest.raises(HTTPException) as incomplete:
        await api.confirm(plan["plan_id"], ConfirmIn(tenant_id=tenant), ana)
    assert incomplete.value.status_code == 409
    ran = await api.confirm(
        plan["plan_id"], ConfirmIn(tenant_id=tenant, edits={0: {"device": "HQ-LT-7"}}), ana
    )
    assert ran["status"] == "running"
    assert store.get_run(api.engine, tenant, ran["run_id"])["steps"] == [  # type: ignore[index]
        {"action": "rmm.reboot_device", "params": {"device": "HQ-LT-7"}}
    ]


async def test_a_step_the_policy_refuses_stops_the_plan_with_the_rule(api: AutomationApi) -> None:
    tenant = unique("refused")
    ana = key(tenant, "engineer", "ana")
    store.put_policy(api.engine, tenant, TenantPolicy(allowed_targets={"group": ["VPN-*"]}), "key:root")
    plan = await propose(api, tenant, "add tkim to Finance-RW", ana)
    assert plan["steps"][0]["status"] == "refused"
    assert "allowed_targets.group" in plan["steps"][0]["refused_by"]
    with pytest.raises(HTTPException) as refused:
        await api.confirm(plan["plan_id"], ConfirmIn(tenant_id=tenant), ana)
    assert refused.value.status_code == 409 and "allowed_targets.group" in json.dumps(refused.value.detail)
    assert audited(api, "automation.plan.refused")
    nothing = await propose(api, tenant, "order a new chair", ana)
    assert nothing["steps"] == [] and nothing["status"] == "empty" and "nothing will run" in nothing["answer"]


async def test_a_dry_run_needs_no_approval_and_leaves_the_plan_proposed(api: AutomationApi) -> None:
    tenant = unique("dry")
    ana = key(tenant, "engineer", "ana")
    plan = await propose(api, tenant, "disable the account", ana, requester="leaver3")
    assert plan["steps"][0]["status"] == "needs approval"
    dry = await api.confirm(plan["plan_id"], ConfirmIn(tenant_id=tenant, dry_run=True), ana)
    assert dry["dry_run"] is True
    assert store.get_plan(api.engine, tenant, plan["plan_id"])["status"] == "proposed"  # type: ignore[index]
    assert audited(api, "automation.dry_run.requested")
