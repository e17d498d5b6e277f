"""A run as the service starts it: the `automation.runs.v1` event the executor consumes and the
row that follows its progress, built the same way for an engineer's plan, an automation run in
`auto` mode, and a note the service writes into a ticket."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from libs.common.events import (
    ActionStep,
    AutomationRun,
    AutomationRunPayload,
    EventSource,
    derive_event_id,
    utcnow,
)
from services.automation.catalogue import catalogue


def make_run(
    tenant: str,
    steps: list[dict[str, Any]],
    *,
    requested_by: str,
    ticket_id: str | None,
    mode: Literal["manual", "suggested", "auto"] = "manual",
    run_id: uuid.UUID | None = None,
    plan_id: str | None = None,
    approved_by: str | None = None,
    automation_id: str | None = None,
    automation_version: int | None = None,
    dry_run: bool = False,
    reference: str | None = None,
    checks: dict[int, str] | None = None,
) -> tuple[dict[str, Any], AutomationRun]:
    """(the runs row, the event). Parameters are validated against the catalogue here, so a run
    the executor receives never carries an unknown field. `run_id`: pass a derived one where a
    redelivery must start the same run, not a second."""
    run_id = run_id or uuid.uuid4()
    cat = catalogue()
    action_steps = [
        ActionStep(action=s["action"], params=cat[s["action"]].validate(s["params"]).model_dump(mode="json"))
        for s in steps
    ]
    event = AutomationRun(
        event_id=derive_event_id(tenant, "automation.run", str(run_id)),
        tenant_id=tenant,
        occurred_at=utcnow(),
        source=EventSource(system="msp.automation", reference=reference or plan_id or automation_id),
        payload=AutomationRunPayload(
            run_id=run_id,
            automation_id=uuid.UUID(automation_id) if automation_id else None,
            automation_version=automation_version,
            ticket_id=ticket_id,
            steps=action_steps,
            requested_by=requested_by,
            mode=mode,
            plan_id=uuid.UUID(plan_id) if plan_id else None,
            approved_by=approved_by,
            dry_run=dry_run,
            checks=checks or {},
        ),
    )
    row = {
        "run_id": str(run_id),
        "tenant_id": tenant,
        "plan_id": plan_id,
        "ticket_id": ticket_id,
        "requested_by": requested_by,
        "approved_by": approved_by,
        "steps": [s.model_dump(mode="json") for s in action_steps],
        "status": "queued",
        "created_at": utcnow(),
        "dry_run": dry_run,
        "automation_id": automation_id,
        "automation_version": automation_version,
    }
    return row, event


def note_run(
    tenant: str, ticket_id: str, text: str, *, key: str, requested_by: str
) -> tuple[dict[str, Any], AutomationRun]:
    """A one-step run that writes `text` into the ticket through the PSA (psa.add_note): the
    packet service posts it once. `key` names the note, so the same note is one run forever."""
    return make_run(
        tenant,
        [{"action": "psa.add_note", "params": {"text": text[:4000]}}],
        requested_by=requested_by,
        ticket_id=ticket_id,
        mode="auto",
        run_id=uuid.uuid5(uuid.NAMESPACE_URL, f"msp:{tenant}:note:{key}"),
        reference=key,
    )
