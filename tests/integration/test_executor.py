"""The executor against PostgreSQL and real peers, run event by run event: an MFA challenge
that waits for the person's code, a redelivered run that runs nothing twice, a step that may
have run and cannot be checked, and the policy checked again at run time."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, time
from typing import Any

import pytest
from sqlalchemy import select

from libs.common.crypto import SecretBox, new_key
from libs.common.db import make_engine, migrate
from libs.common.events import ActionStep, AutomationRun, AutomationRunPayload, EventSource, utcnow
from libs.common.settings import REPO_ROOT
from services.automation import store
from services.automation.catalogue import idempotency_key
from services.automation.executor import Executor
from services.automation.policy import TenantPolicy, Window
from services.automation.tables import outbox
from tests.conftest import unique
from tests.peers import DomainController, Prism
from tests.peers.ninjaone import NinjaOnePeer


class Relay:
    def wake(self) -> None:
        return None


@pytest.fixture
def db(pg_url: str) -> Any:
    migrate(pg_url, REPO_ROOT / "services" / "automation" / "migrations", "automation")
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def executor(db: Any, box: SecretBox, now: datetime | None = None) -> Executor:
    return Executor(
        engine=db,
        box=box,
        secret=b"e" * 32,
        relay=Relay(),  # type: ignore[arg-type]
        clock=(lambda: now) if now else None,
    )


def run_event(
    tenant: str, steps: list[tuple[str, dict[str, Any]]], run_id: uuid.UUID | None = None
) -> AutomationRun:
    run_id = run_id or uuid.uuid4()
    return AutomationRun(
        event_id=uuid.uuid4(),
        tenant_id=tenant,
        occurred_at=utcnow(),
        source=EventSource(system="test"),
        payload=AutomationRunPayload(
            run_id=run_id,
            steps=[ActionStep(action=a, params=p) for a, p in steps],
            requested_by="key:ana",
            mode="manual",
        ),
    )


def results(db: Any, run_id: uuid.UUID) -> list[dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(select(outbox.c.value).where(outbox.c.topic.like("%automation.results.v1"))).all()
    docs = [json.loads(r[0]) for r in rows]
    return [d["payload"] for d in docs if d["payload"]["run_id"] == str(run_id)]


def test_a_challenge_waits_for_the_code_then_the_run_goes_on(
    db: Any, dc: DomainController, twilio_peers: tuple[Prism, Prism]
) -> None:
    box, tenant = SecretBox(new_key()), unique("mfa")
    dc.add_user("nmensah", "Locked-Passw0rd!", mobile="+15551234567")
    messages, verify = twilio_peers
    twilio = {
        "kind": "twilio",
        "account_sid": "AC" + "0" * 32,
        "auth_token": "t",
        "from_number": "+15557654321",
        "verify_service_sid": "VA" + "0" * 32,
        "api_base_url": messages.url,
        "verify_base_url": verify.url,
    }
    store.put_tools(db, box, tenant, {"identity": dc.tool(), "verify": twilio, "sms": twilio})
    event = run_event(
        tenant,
        [
            ("identity.verify_user_mfa", {"user": "nmensah", "method": "sms"}),
            ("identity.unlock_account", {"user": "nmensah"}),
        ],
    )
    ex = executor(db, box)
    assert ex.run(event) == "waiting"
    assert store.ledger_row(db, idempotency_key(event.payload.run_id, 0))["state"] == "awaiting_code"  # type: ignore[index]
    assert ex.run(event) == "waiting", "redelivered without a code: still waiting, nothing sent again"
    assert store.put_code(db, tenant, str(event.payload.run_id), 0, box.seal({"code": "123456"}))
    assert ex.run(event) == "succeeded"
    outcomes = [r["outcome"] for r in results(db, event.payload.run_id)]
    assert outcomes == ["waiting", "running", "succeeded"]


def test_a_redelivered_run_runs_nothing_twice(db: Any, ninjaone: NinjaOnePeer) -> None:
    box, tenant = SecretBox(new_key()), unique("redeliver")
    store.put_tools(db, box, tenant, {"rmm": ninjaone.tool()})
    event = run_event(
        tenant,
        [
            ("rmm.run_script", {"device": "ACME-LT-042", "script": "flush_dns"}),
            ("rmm.reboot_device", {"device": "ACME-LT-042"}),
        ],
    )
    ex = executor(db, box)
    assert ex.run(event) == "succeeded"
    posts = [c for c in ninjaone.calls if c[0] == "POST"]
    assert ex.run(event) == "succeeded"
    assert [c for c in ninjaone.calls if c[0] == "POST"] == posts and len(posts) == 2
    assert len(results(db, event.payload.run_id)) == 2, "one result per step, not per delivery"


def test_a_step_that_may_have_run_and_cannot_be_checked_is_not_run_again(
    db: Any, ninjaone: NinjaOnePeer
) -> None:
    box, tenant = SecretBox(new_key()), unique("uncertain")
    store.put_tools(db, box, tenant, {"rmm": ninjaone.tool()})
    event = run_event(tenant, [("rmm.reboot_device", {"device": "SQL01"})])
    key = idempotency_key(event.payload.run_id, 0)
    # As a crash leaves it: recorded as started, its outcome never written.
    store.start_step(
        db, key=key, run_id=str(event.payload.run_id), tenant_id=tenant, step=0, action="rmm.reboot_device"
    )
    assert executor(db, box).run(event) == "failed"
    assert store.ledger_row(db, key)["error_class"] == "uncertain"  # type: ignore[index]
    assert [c for c in ninjaone.calls if c[0] == "POST"] == [], "no second reboot"


def test_the_policy_is_checked_again_when_the_run_runs(db: Any, ninjaone: NinjaOnePeer) -> None:
    box, tenant = SecretBox(new_key()), unique("window")
    store.put_tools(db, box, tenant, {"rmm": ninjaone.tool()})
    store.put_policy(
        db, tenant, TenantPolicy(windows=[Window(actions=["rmm.*"], start=time(8), end=time(18))]), "key:root"
    )
    saturday = datetime(2026, 11, 28, 12, tzinfo=UTC)
    event = run_event(tenant, [("rmm.reboot_device", {"device": "SQL01"})])
    assert executor(db, box, now=saturday).run(event) == "failed"
    row = store.ledger_row(db, idempotency_key(event.payload.run_id, 0))
    assert row is not None and row["error_class"] == "policy" and "windows[0]" in row["message"]
    assert ninjaone.calls == []


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(db: Any, ninjaone: NinjaOnePeer) -> None:
    box, tenant = SecretBox(new_key()), unique("dry")
    store.put_tools(db, box, tenant, {"rmm": ninjaone.tool()})
    event = run_event(tenant, [("rmm.reboot_device", {"device": "SQL01"})])
    event = event.model_copy(update={"payload": event.payload.model_copy(update={"dry_run": True})})
    assert executor(db, box).run(event) == "succeeded"
    assert ninjaone.calls == []
    (result,) = results(db, event.payload.run_id)
    assert result["dry_run"] is True and result["steps"][0]["response"]["would"] == "rmm.reboot_device"


def test_an_automations_checks_run_before_any_step_changes_anything(db: Any, dc: DomainController) -> None:
    """An automation version with an `exists` precondition: the executor looks the target up on
    the DC first; a missing one fails the run at that step before step 0 runs, and a redelivery
    stays failed without running anything."""
    box, tenant = SecretBox(new_key()), unique("checks")
    dc.add_user("kbrown", "Locked-Passw0rd!")
    store.put_tools(db, box, tenant, {"identity": dc.tool()})
    steps = [
        ("identity.unlock_account", {"user": "kbrown"}),
        ("identity.reset_password", {"user": "nobody.here"}),
    ]
    event = run_event(tenant, steps)
    event = event.model_copy(update={"payload": event.payload.model_copy(update={"checks": {1: "user"}})})
    ex = executor(db, box)
    assert ex.run(event) == "failed"
    rows = store.steps_of(db, tenant, str(event.payload.run_id))
    assert [(r["step"], r["state"], r["error_class"]) for r in rows] == [(1, "failed", "not_found")]
    assert "precondition of step 1" in rows[0]["message"]
    assert ex.run(event) == "failed" and len(store.steps_of(db, tenant, str(event.payload.run_id))) == 1
    (result,) = {json.dumps(r, sort_keys=True) for r in results(db, event.payload.run_id)}
    assert json.loads(result)["outcome"] == "failed"
    # With the target there, the check passes and every step runs.
    ok = run_event(tenant, [("identity.unlock_account", {"user": "kbrown"})])
    ok = ok.model_copy(update={"payload": ok.payload.model_copy(update={"checks": {0: "user"}})})
    assert ex.run(ok) == "succeeded"
