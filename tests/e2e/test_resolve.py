"""Resolve, end to end, against real peers: a ticket arrives; an engineer's key posts an
instruction; the plan waits for an approver's key (adding to an admin group); the executor (its
own process) runs each step against a Samba AD DC, moto (AWS IAM) and a NinjaOne peer; the
results reach the escalation packet ("already tried") and the audit trail. Then: the executor
killed with SIGKILL mid-run runs every step exactly once; and tenant A's keys cannot plan or run
anything of tenant B's, each attempt audited."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from libs.common.db import make_engine
from services.automation.catalogue import idempotency_key
from services.ingest import tenants
from tests.conftest import unique
from tests.fakes.psa_sink import psa_sink
from tests.peers import DomainController, Moto, start_dc
from tests.peers.ninjaone import NinjaOnePeer
from tests.processes import platform_env, spawn_service, start_platform, stop_platform, wait_ready

pytestmark = pytest.mark.e2e


def until(check: Any, what: str, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Platform:
    def __init__(
        self,
        bootstrap: str,
        pg_url: str,
        tmp: Path,
        prefix: str,
        services: tuple[str, ...] = ("ingest", "packet", "audit"),
    ) -> None:
        self.env = platform_env(bootstrap, pg_url, tmp, "r" * 40, prefix)
        self.tmp = tmp
        self.started = start_platform(list(services), self.env, tmp)
        self.ingest = self.started["ingest"][1]
        self.packet = self.started["packet"][1]
        self.audit_url = self.started["audit"][1]
        self.group = f"{self.env['MSP_TOPIC_NAMESPACE']}-automation"
        self.api_proc, self.api = self.spawn("api", "automation-api.log")
        self.executor, _ = self.spawn("executor", "executor-1.log")
        self.engine = make_engine(pg_url)
        self.operator = {"Authorization": f"Bearer {self.env['MSP_ADMIN_TOKEN']}"}

    def spawn(self, role: str, log: str) -> tuple[Any, str]:
        env = {
            **self.env,
            "MSP_AUTOMATION_ROLE": role,
            "MSP_CONSUMER_GROUP": self.group,
            "MSP_INGEST_URL": self.ingest,
        }
        proc, url = spawn_service("automation", env, self.tmp / log)
        wait_ready({f"automation-{role}": (proc, url, self.tmp / log)})
        return proc, url

    def tenant(self, name: str) -> dict[str, str]:
        tenant = unique(name)
        tenants.add_tenant(self.engine, tenant, name)
        return {
            "tenant": tenant,
            "sender": tenants.issue_key(self.engine, tenant, role="integration"),
            "engineer": tenants.issue_key(self.engine, tenant, role="engineer", label=f"ana@{tenant}"),
            "approver": tenants.issue_key(self.engine, tenant, role="approver", label=f"bo@{tenant}"),
            "admin": tenants.issue_key(self.engine, tenant, role="admin", label=f"root@{tenant}"),
        }

    def stop(self) -> None:
        stop_platform(self.started)
        for p in (self.api_proc, self.executor):
            if p.poll() is None:
                p.kill()
        self.engine.dispose()

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"X-API-Key": key} if key else self.operator
        return httpx.request(method, f"{self.api}{path}", headers=headers, timeout=60, **kw)

    def audit(self, tenant: str, action: str) -> list[dict[str, Any]]:
        r = httpx.get(
            f"{self.audit_url}/v1/audit/events",
            params={"tenant_id": tenant, "action": action, "limit": 1000},
            headers=self.operator,
        )
        assert r.status_code == 200, r.text
        return list(r.json())

    def run_done(self, tenant: str, run_id: str, key: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            view = self.call("GET", f"/v1/runs/{run_id}", key, params={"tenant_id": tenant}).json()
            return view if view.get("status") in ("succeeded", "failed") else None

        return until(check, f"run {run_id} to finish")  # type: ignore[no-any-return]


@pytest.fixture
def platform(bootstrap: str, pg_url: str, tmp_path: Path) -> Any:
    p = Platform(bootstrap, pg_url, tmp_path, "resolve")
    yield p
    p.stop()


def tools(
    p: Platform,
    t: dict[str, str],
    dc: DomainController,
    moto: Moto | None = None,
    ninja: NinjaOnePeer | None = None,
) -> None:
    doc: dict[str, Any] = {"identity": dc.tool(), "psa": {"kind": "psa_bus"}}
    if moto:
        doc["aws"] = moto.tool()
    if ninja:
        doc["rmm"] = ninja.tool()
    r = p.call("PUT", "/v1/tools", t["admin"], params={"tenant_id": t["tenant"]}, json=doc)
    assert r.status_code == 200, r.text
    assert dc.password not in r.text


def test_an_instruction_runs_after_approval_and_reaches_the_packet_and_the_audit(
    platform: Platform, dc: DomainController, moto: Moto, ninjaone: NinjaOnePeer
) -> None:
    p, t = platform, platform.tenant("resolve")
    tenant = t["tenant"]
    dc.add_user("mgarcia", "Before-Passw0rd!")
    dc.add_group("Domain Admins-Helpdesk")
    iam_user = unique("mg-ci")
    iam = boto3.client(
        "iam",
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    iam.create_user(UserName=iam_user)
    iam.create_login_profile(UserName=iam_user, Password="Console-Passw0rd-1!")
    tools(p, t, dc, moto, ninjaone)
    sink_cm = psa_sink()
    sink, sink_url = sink_cm.__enter__()
    r = httpx.put(
        f"{p.packet}/v1/psa",
        headers=p.operator,
        json={"tenant_id": tenant, "kind": "halopsa", "base_url": sink_url, "credentials": {"token": "t"}},
    )
    assert r.status_code == 200, r.text
    try:
        _resolve(p, t, dc, iam, iam_user, ninjaone, sink)
    finally:
        sink_cm.__exit__(None, None, None)


def _resolve(
    p: Platform,
    t: dict[str, str],
    dc: DomainController,
    iam: Any,
    iam_user: str,
    ninjaone: NinjaOnePeer,
    sink: Any,
) -> None:
    tenant = t["tenant"]
    # The ticket arrives and is escalated (a packet exists for it).
    snap = {
        "ticket_id": "T-100",
        "title": "Locked out after holiday",
        "requester": "mgarcia",
        "devices": ["ACME-LT-042"],
    }
    r = httpx.post(
        f"{p.ingest}/v1/tickets/events/batch",
        headers={"X-API-Key": t["sender"]},
        json={
            "events": [
                {"kind": "created", "event_ref": "c", "ticket": snap},
                {
                    "kind": "escalated",
                    "event_ref": "e",
                    "ticket": snap,
                    "escalation": {"from_tier": "L1", "to_tier": "L2"},
                },
            ]
        },
    )
    assert r.status_code == 202, r.text

    instruction = (
        "unlock her and reset the password, add her to Domain Admins-Helpdesk, flush dns on the "
        f"laptop, then disable console login for iam user {iam_user}; note in the ticket: "
        "'Unlocked and reset through the platform'"
    )
    ticket = {
        "ticket_id": "T-100",
        "requester": "mgarcia",
        "device": "ACME-LT-042",
        "summary": "Locked out after holiday",
    }
    r = p.call(
        "POST",
        "/v1/instructions",
        t["engineer"],
        json={"tenant_id": tenant, "instruction": instruction, "ticket": ticket},
    )
    assert r.status_code == 201, r.text
    plan = r.json()
    assert [s["action"] for s in plan["steps"]] == [
        "identity.unlock_account",
        "identity.reset_password",
        "identity.add_to_group",
        "rmm.run_script",
        "aws.disable_console_login",
        "psa.add_note",
    ]
    assert plan["steps"][0]["sources"]["user"] == "ticket"
    assert [s["status"] for s in plan["steps"]] == [
        "runnable",
        "runnable",
        "needs approval",
        "runnable",
        "runnable",
        "runnable",
    ]
    assert plan["interpreter"] == "local" and plan["questions"] == []

    # A sender key may not interpret; the engineer confirms; the plan waits for an approver.
    assert (
        p.call(
            "POST", "/v1/instructions", t["sender"], json={"tenant_id": tenant, "instruction": "x"}
        ).status_code
        == 403
    )
    r = p.call("POST", f"/v1/plans/{plan['plan_id']}/confirm", t["engineer"], json={"tenant_id": tenant})
    assert r.status_code == 200 and r.json()["status"] == "awaiting approval", r.text
    # Not the engineer (not an approver), not the operator token (names no person).
    for who in (t["engineer"], None):
        r = p.call(
            "POST",
            f"/v1/plans/{plan['plan_id']}/approve",
            who,
            json={"tenant_id": tenant, "reason": "looks fine"},
        )
        assert r.status_code == 403, r.text
    r = p.call(
        "POST",
        f"/v1/plans/{plan['plan_id']}/approve",
        t["approver"],
        json={"tenant_id": tenant, "reason": "helpdesk role agreed with the client"},
    )
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]

    view = p.run_done(tenant, run_id, t["engineer"])
    assert view["status"] == "succeeded", view
    assert view["approved_by"] == f"key:bo@{tenant}" and view["requested_by"] == f"key:ana@{tenant}"
    assert [s["state"] for s in view["steps"]] == ["succeeded"] * 6

    # The effects, read back from the peers.
    password = p.call(
        "GET", f"/v1/runs/{run_id}/steps/1/password", t["engineer"], params={"tenant_id": tenant}
    )
    assert password.status_code == 200
    assert dc.bind("mgarcia", password.json()["temporary_password"]) == (False, "773"), (
        "new password, must change"
    )
    assert any("mgarcia" in m for m in dc.members("Domain Admins-Helpdesk"))
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_login_profile(UserName=iam_user)
    assert [c for c in ninjaone.calls if c[1].endswith("/script/run")] == [
        (
            "POST",
            "/v2/device/101/script/run",
            {"type": "SCRIPT", "id": 11, "parameters": "", "runAs": "system"},
        )
    ]

    # The results reach the packet ("already tried") ...
    def packet_has_run() -> dict[str, Any] | None:
        listed = httpx.get(f"{p.packet}/v1/packets", params={"tenant_id": tenant}, headers=p.operator).json()
        for item in listed.get("packets", []):
            doc = httpx.get(
                f"{p.packet}/v1/packets/{item['packet_id']}", params={"tenant_id": tenant}, headers=p.operator
            ).json()
            latest = doc["versions"][-1]["packet"] if "versions" in doc else doc
            tried = [c["text"] for c in latest.get("already_tried", [])]
            if sum("The platform ran" in x and "succeeded" in x for x in tried) == 6:
                return latest
        return None

    until(packet_has_run, "the run's six steps in the packet's already-tried")

    # ... the note the engineer asked for is in the ticket, once, posted by the packet service ...
    def action_notes() -> list[Any]:
        return [n for n in sink.notes if "msp-action:" in n["body"][0]["note_html"]]

    until(lambda: len(action_notes()) == 1, "the step's note in the PSA")
    note = action_notes()[0]["body"][0]
    assert "Unlocked and reset through the platform" in note["note_html"] and note["ticket_id"] == "T-100"
    assert note["hiddenfromuser"] is True
    # ... and the audit trail: who asked, who approved, each step's outcome.
    steps = until(
        lambda: (lambda e: e if len(e) == 6 else None)(p.audit(tenant, "automation.step.succeeded")),
        "six audited steps",
    )
    assert {e["actor"] for e in steps} == {f"key:ana@{tenant}"}
    assert {e["details"]["approved_by"] for e in steps} == {f"key:bo@{tenant}"}
    assert "Tmp-" not in str(steps), "no temporary password in the audit trail"
    assert until(lambda: p.audit(tenant, "automation.run.requested"), "the audited request")
    assert until(lambda: p.audit(tenant, "packet.action_note.posted"), "the audited note")
    assert len(action_notes()) == 1
    # `msp run` shows the same progress to an engineer with their key.
    import subprocess
    import sys

    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "run",
            run_id,
            "--tenant",
            tenant,
            "--automation-url",
            p.api,
            "--key",
            t["engineer"],
            "--watch",
            "--timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"run {run_id}: succeeded (6/6)" in shown.stdout and "5. psa.add_note succeeded" in shown.stdout


def test_the_executor_killed_mid_run_runs_every_step_exactly_once(
    platform: Platform, dc: DomainController
) -> None:
    p, t = platform, platform.tenant("crash")
    tenant = t["tenant"]
    groups = [f"Team-{n:02d}" for n in range(30)]
    dc.add_user("wkim", "Before-Passw0rd!")
    for g in groups:
        dc.add_group(g)
    tools(p, t, dc)
    r = p.call(
        "POST",
        "/v1/instructions",
        t["engineer"],
        json={
            "tenant_id": tenant,
            "instruction": f"add wkim to {', '.join(groups[:-1])} and {groups[-1]}",
            "ticket": {"requester": "wkim"},
        },
    )
    assert r.status_code == 201, r.text
    plan = r.json()
    assert len(plan["steps"]) == 30 and {s["status"] for s in plan["steps"]} == {"runnable"}
    r = p.call("POST", f"/v1/plans/{plan['plan_id']}/confirm", t["engineer"], json={"tenant_id": tenant})
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]

    def progress() -> int:
        view = p.call("GET", f"/v1/runs/{run_id}", t["engineer"], params={"tenant_id": tenant}).json()
        return sum(1 for s in view["steps"] if s["state"] == "succeeded")

    until(lambda: progress() >= 5, "five steps done", timeout_s=60)
    p.executor.send_signal(signal.SIGKILL)
    p.executor.wait()
    done_at_kill = progress()
    assert done_at_kill < 30, "the run finished before the executor could be killed"
    p.executor, _ = p.spawn("executor", "executor-2.log")

    view = p.run_done(tenant, run_id, t["engineer"])
    assert view["status"] == "succeeded", view
    members = [m.lower() for g in groups for m in dc.members(g)]
    assert len(members) == 30 and all("wkim" in m for m in members)
    ledger = view["steps"]
    reran = [s for s in ledger if s["attempts"] > 1]
    verified = [s for s in ledger if (s["response"] or {}).get("verified_on_peer")]
    print(
        f"\nexecutor SIGKILL after {done_at_kill}/30 steps: {len(ledger)} steps succeeded, "
        f"{len(verified)} found done on the peer after the restart, {len(reran)} started again after the "
        f"peer said not done"
    )
    # The step in flight at the kill was either found done on the peer (not run again) or, the
    # peer saying its effect was not there, run again: then the directory reports it made the
    # change (a first run that had taken effect would make the second say "already so").
    assert len(verified) + len(reran) <= 1
    assert all(s["response"].get("changed") is True for s in ledger if s not in verified)
    assert all(s["attempts"] <= 2 for s in ledger)
    # One succeeded result per step, however often the run event was redelivered.
    events = until(
        lambda: (lambda e: e if len(e) >= 30 else None)(p.audit(tenant, "automation.step.succeeded")),
        "30 audited steps",
    )
    assert sorted(e["details"]["step"] for e in events) == list(range(30))
    assert {e["details"]["idempotency_key"] for e in events} == {
        idempotency_key(run_id, n) for n in range(30)
    }


def test_a_tenant_cannot_plan_or_run_anything_of_another(
    platform: Platform, dc: DomainController, peers_dir: Path
) -> None:
    p = platform
    a, b = p.tenant("tenant-a"), p.tenant("tenant-b")
    dc_b = start_dc(peers_dir)
    try:
        dc.add_user("a-user", "A-Passw0rd-123!")
        dc_b.add_user("b-user", "B-Passw0rd-123!")
        tools(p, a, dc)
        tools(p, b, dc_b)
        attack = {
            "tenant_id": b["tenant"],
            "instruction": "reset pw for b-user",
            "ticket": {"requester": "b-user"},
        }
        assert p.call("POST", "/v1/instructions", a["engineer"], json=attack).status_code == 403
        # B's own plan, confirmed or approved with A's keys under either tenant's name.
        r = p.call("POST", "/v1/instructions", b["engineer"], json=attack)
        assert r.status_code == 201, r.text
        plan_b = r.json()["plan_id"]
        for key in (a["engineer"], a["approver"], a["admin"]):
            assert (
                p.call(
                    "POST", f"/v1/plans/{plan_b}/confirm", key, json={"tenant_id": b["tenant"]}
                ).status_code
                == 403
            )
            assert (
                p.call(
                    "POST", f"/v1/plans/{plan_b}/confirm", key, json={"tenant_id": a["tenant"]}
                ).status_code
                == 404
            )
        assert (
            p.call("GET", f"/v1/plans/{plan_b}", a["engineer"], params={"tenant_id": b["tenant"]}).status_code
            == 403
        )
        assert (
            p.call(
                "PUT",
                "/v1/tools",
                a["admin"],
                params={"tenant_id": b["tenant"]},
                json={"identity": dc.tool()},
            ).status_code
            == 403
        )
        assert (
            p.call(
                "GET", f"/v1/runs/{uuid.uuid4()}", a["engineer"], params={"tenant_id": b["tenant"]}
            ).status_code
            == 403
        )
        # Naming B's user in A's own tenant runs against A's directory only: not found there.
        r = p.call("POST", "/v1/instructions", a["engineer"], json={**attack, "tenant_id": a["tenant"]})
        plan_a = r.json()["plan_id"]
        r = p.call("POST", f"/v1/plans/{plan_a}/confirm", a["engineer"], json={"tenant_id": a["tenant"]})
        view = p.run_done(a["tenant"], r.json()["run_id"], a["engineer"])
        assert view["status"] == "failed" and view["steps"][0]["error_class"] == "not_found"
        assert dc_b.bind("b-user", "B-Passw0rd-123!") == (True, ""), "B's user is untouched"
        refused = until(
            lambda: (lambda e: e if len(e) >= 4 else None)(p.audit(b["tenant"], "automation.access.refused")),
            "the refusals in B's audit trail",
        )
        assert {e["details"]["caller_tenant"] for e in refused} == {a["tenant"]}
    finally:
        dc_b.stop()
