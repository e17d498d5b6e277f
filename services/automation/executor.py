"""The executor: runs the steps of each `automation.runs.v1` event in order, each exactly once,
and says what happened on `automation.results.v1` and in the audit trail.

Exactly once, even when the event is redelivered or the process is killed mid-run, by the step
ledger (one row per idempotency key = (run, step)):
- before a connector is called, the step is recorded `started` (committed);
- after it answers, the outcome, its result event and its audit event are written in one
  transaction (the outbox relays them);
- on redelivery a `succeeded` or `failed` step is not run again; a `started` one may have
  run before a crash, so the executor asks the peer (`Connector.done`): done means succeeded,
  not done means run it; when the peer cannot tell, a step whose effect is a fixed state runs
  again and any other fails as `uncertain` (an engineer checks by hand) rather than run twice.
A run stops at the first failure. A step waiting for a person (an MFA code) stops the run
until the code arrives, which re-sends the run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from libs.common.audit import audit_event
from libs.common.crypto import SecretBox
from libs.common.events import (
    AutomationResult,
    AutomationResultPayload,
    AutomationRun,
    Envelope,
    EventSource,
    StepResult,
    derive_event_id,
    utcnow,
)
from libs.common.outbox import OutboxRelay
from services.automation import store
from services.automation.catalogue import Action, get, idempotency_key, param_errors
from services.automation.connectors import StepFailed, connector_for, system_of
from services.automation.connectors.base import Connector
from services.automation.connectors.twilio import NeedsCode, Twilio
from services.automation.policy import decide

log = logging.getLogger(__name__)


class Executor:
    def __init__(
        self,
        *,
        engine: Engine,
        box: SecretBox,
        secret: bytes,
        relay: OutboxRelay,
        namespace: str = "",
        clock: Any = None,
    ) -> None:
        self.namespace = namespace
        self.engine = engine
        self.box = box
        self.secret = secret
        self.relay = relay
        self.clock = clock or (lambda: datetime.now(UTC))

    async def handle(self, event: Envelope, _record: Any = None) -> None:
        if not isinstance(event, AutomationRun):
            return
        await asyncio.to_thread(self.run, event)
        self.relay.wake()

    # --- one run -------------------------------------------------------------------------------

    def run(self, event: AutomationRun) -> str:
        p, tenant = event.payload, event.tenant_id
        run_id = str(p.run_id)
        store.ensure_run(
            self.engine,
            {
                "run_id": run_id,
                "tenant_id": tenant,
                "plan_id": str(p.plan_id) if p.plan_id else None,
                "ticket_id": p.ticket_id,
                "requested_by": p.requested_by,
                "approved_by": p.approved_by,
                "steps": [s.model_dump(mode="json") for s in p.steps],
                "status": "queued",
                "dry_run": p.dry_run,
                "created_at": utcnow(),
                "automation_id": str(p.automation_id) if p.automation_id else None,
                "automation_version": p.automation_version,
            },
        )
        tool_map = store.get_tools(self.engine, self.box, tenant)
        policy = store.get_policy(self.engine, tenant)
        results: list[StepResult] = []
        connectors: dict[str, Connector] = {}
        status = "succeeded"
        try:
            if p.checks and not p.dry_run:
                failed = self._check_first(event, tool_map, policy, connectors)
                if failed is not None:
                    results.append(failed)
                    status = "failed"
            for index, step in enumerate(p.steps if status != "failed" else []):
                key = idempotency_key(run_id, index)
                row = store.ledger_row(self.engine, key)
                if row is not None and row["state"] in ("succeeded", "failed"):
                    results.append(_from_row(row, index, step.params))
                    if row["state"] == "failed":
                        status = "failed"
                        break
                    continue
                outcome = self._step(
                    event, index, key, row, step.action, step.params, tool_map, policy, connectors, results
                )
                assert outcome is not None  # only a check returns nothing
                results.append(outcome)
                if outcome.outcome == "failed":
                    status = "failed"
                    break
                if outcome.outcome == "waiting":
                    status = "waiting"
                    break
        finally:
            for c in connectors.values():
                c.close()
        store.set_run_status(
            self.engine,
            tenant,
            run_id,
            "running" if status == "waiting" else status,
            finished=status in ("succeeded", "failed"),
        )
        return status

    def _check_first(
        self,
        event: AutomationRun,
        tool_map: dict[str, dict[str, Any]],
        policy: Any,
        connectors: dict[str, Connector],
    ) -> StepResult | None:
        """The run's preconditions on the peer, before any step changes anything: a target that
        is not there fails its step (and so the run) at once. A run already failed this way
        stays failed; one that got past them is not checked again."""
        p = event.payload
        rows = {r["step"]: r for r in store.steps_of(self.engine, event.tenant_id, str(p.run_id))}
        for index, row in sorted(rows.items()):
            if row["state"] == "failed":
                return _from_row(row, index, p.steps[index].params)
        if rows:
            return None
        for index, param in sorted(p.checks.items()):
            if not 0 <= index < len(p.steps):
                continue
            step = p.steps[index]
            failed = self._step(
                event,
                index,
                idempotency_key(str(p.run_id), index),
                None,
                step.action,
                step.params,
                tool_map,
                policy,
                connectors,
                [],
                check=param,
            )
            if failed is not None:
                return failed
        return None

    def _step(
        self,
        event: AutomationRun,
        index: int,
        key: str,
        row: dict[str, Any] | None,
        action_name: str,
        raw_params: dict[str, Any],
        tool_map: dict[str, dict[str, Any]],
        policy: Any,
        connectors: dict[str, Connector],
        results: list[StepResult],
        check: str | None = None,
    ) -> StepResult | None:
        p, tenant = event.payload, event.tenant_id
        last = index == len(p.steps) - 1
        action = get(action_name)
        t0 = time.monotonic()

        def finish(
            state: str, response: dict[str, Any], error: str | None = None, message: str = ""
        ) -> StepResult:
            outcome = {"ok": "succeeded", "failed": "failed", "waiting": "waiting"}[state]
            result = StepResult(
                index=index,
                action=action_name,
                outcome=outcome,
                error_class=error,
                message=message[:2000],
                params=raw_params,
                response=response,
                duration_ms=round((time.monotonic() - t0) * 1000, 1),
                idempotency_key=key,
            )
            run_outcome = (
                "failed"
                if outcome == "failed"
                else "waiting"
                if outcome == "waiting"
                else "succeeded"
                if last
                else "running"
            )
            events = self._report(event, [*results, result], run_outcome, result)
            store.finish_step(
                self.engine,
                key=key,
                run_id=str(p.run_id),
                tenant_id=tenant,
                step=index,
                action=action_name,
                state={"waiting": "awaiting_code"}.get(outcome, outcome),
                duration_ms=result.duration_ms or 0.0,
                response=response,
                error_class=error,
                message=message,
                events=events,
                namespace=self.namespace,
            )
            return result

        if action is None:
            return finish("failed", {}, "invalid_input", f"{action_name} is not in the catalogue")
        try:
            params = action.validate(raw_params)
        except ValidationError as exc:
            return finish("failed", {}, "invalid_input", "; ".join(param_errors(exc)))
        verdict = decide(policy, action, params.model_dump(), now=self.clock())
        if not verdict.allowed:
            return finish("failed", {}, "policy", f"refused by the tenant policy ({verdict.refused_by})")
        try:
            connector = self._connector(action, tool_map, connectors)
            if check is not None:  # only whether the target exists; nothing changes
                try:
                    connector.check(action, params, check)
                except StepFailed as exc:
                    return finish(
                        "failed",
                        exc.response,
                        exc.error_class,
                        f"precondition of step {index}: {exc.message}",
                    )
                return None
            if row is not None and row["state"] == "awaiting_code":
                return self._code(connector, action, params, key, row, finish)
            if row is not None and row["state"] == "started":
                done = self._done(connector, action, params, key)
                if done is True:
                    return finish("ok", {"verified_on_peer": True, "note": "it had run before a restart"})
                if done is None and action.name not in connector.repeatable:
                    return finish(
                        "failed",
                        {},
                        "uncertain",
                        "the executor stopped while this step ran and the system cannot tell whether it took "
                        "effect: check by hand before running it again",
                    )
            store.start_step(
                self.engine, key=key, run_id=str(p.run_id), tenant_id=tenant, step=index, action=action.name
            )
            response = connector.run(action, params, key=key, dry_run=p.dry_run)
            return finish("ok", response)
        except NeedsCode as wait:
            return finish("waiting", wait.response, None, "waiting for the code the person was sent")
        except StepFailed as exc:
            return finish("failed", exc.response, exc.error_class, exc.message)
        except Exception as exc:  # a connector bug must not lose the run: it fails, visibly
            log.exception("step %s of run %s raised", index, p.run_id)
            return finish("failed", {}, "unavailable", f"{type(exc).__name__}: {exc}"[:500])

    def _connector(self, action: Action, tool_map: dict[str, Any], cache: dict[str, Connector]) -> Connector:
        system = system_of(action.name, action.system)
        if system not in cache:
            phone_of = None
            if system in ("sms", "verify"):

                def phone_of(user: str) -> str:
                    return self._connector_for_system("identity", tool_map, cache).phone_of(user)

            cache[system] = connector_for(tool_map, system, secret=self.secret, phone_of=phone_of)
        return cache[system]

    def _connector_for_system(
        self, system: str, tool_map: dict[str, Any], cache: dict[str, Connector]
    ) -> Connector:
        if system not in cache:
            cache[system] = connector_for(tool_map, system, secret=self.secret)
        return cache[system]

    def _done(self, connector: Connector, action: Action, params: Any, key: str) -> bool | None:
        try:
            return connector.done(action, params, key=key)
        except StepFailed as exc:
            if exc.error_class in ("unavailable", "throttled", "auth"):
                raise
            return None

    def _code(
        self, connector: Connector, action: Action, params: Any, key: str, row: dict[str, Any], finish: Any
    ) -> StepResult:
        sealed = store.take_code(self.engine, key)
        if sealed is None:
            return finish("waiting", {}, None, "waiting for the code the person was sent")
        if not isinstance(connector, Twilio):
            return finish("failed", {}, "unsupported", f"{connector.kind} does not check codes")
        code = self.box.open(sealed)["code"]
        return finish("ok", connector.check_code(params, code))

    def _report(
        self, event: AutomationRun, steps: list[StepResult], outcome: str, step: StepResult
    ) -> list[Envelope]:
        p, tenant = event.payload, event.tenant_id
        run_id = str(p.run_id)
        state = f"{step.index}:{step.outcome}"
        result = AutomationResult(
            event_id=derive_event_id(tenant, "automation.result", run_id, state),
            tenant_id=tenant,
            occurred_at=utcnow(),
            source=EventSource(system="msp.automation", reference=run_id),
            payload=AutomationResultPayload(
                run_id=p.run_id,
                outcome=outcome,
                steps=steps,
                ticket_id=p.ticket_id,
                requested_by=p.requested_by,
                dry_run=p.dry_run,
            ),
        )
        audit = audit_event(
            service="automation",
            tenant_id=tenant,
            actor=p.requested_by,
            action=f"automation.{'dry_run' if p.dry_run else 'step'}.{step.outcome}",
            subject_kind="automation.run",
            subject_id=run_id,
            cause_id=f"{run_id}:{state}",
            outcome="ok" if step.outcome in ("succeeded", "waiting") else "failed",
            details={
                "step": step.index,
                "action": step.action,
                "params": step.params,
                "requested_by": p.requested_by,
                "approved_by": p.approved_by,
                "ticket_id": p.ticket_id,
                "error_class": step.error_class,
                "message": step.message[:500],
                "response": step.response,
                "duration_ms": step.duration_ms,
                "idempotency_key": step.idempotency_key,
            },
        )
        return [result, audit]


def _from_row(row: dict[str, Any], index: int, params: dict[str, Any]) -> StepResult:
    import json

    return StepResult(
        index=index,
        action=row["action"],
        outcome="succeeded" if row["state"] == "succeeded" else "failed",
        error_class=row["error_class"],
        message=row["message"] or "",
        params=params,
        response=json.loads(row["response"]) if row["response"] else {},
        duration_ms=row["duration_ms"],
        idempotency_key=row["idempotency_key"],
    )
