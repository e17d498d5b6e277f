"""What a ticket event means: compare what the PSA says now with the last known state.

PSAs mostly say "ticket updated" and send the ticket; whether that was an escalation (tier,
board or assignee change), a resolution, a reopen or a status change is read off the diff.
"""

from __future__ import annotations

from typing import Any, Literal

from libs.common.events import (
    Escalation,
    EventSource,
    TicketEvent,
    TicketEventKind,
    TicketEventPayload,
    TicketSnapshot,
    derive_event_id,
)
from services.ingest.adapters.common import TicketObservation

Phase = Literal["open", "resolved", "closed"]
SNAPSHOT_FIELDS = set(TicketSnapshot.model_fields)


def phase(status: str | None, closed_flag: bool | None = None) -> Phase:
    words = (status or "").lower()
    if any(w in words for w in ("resolv", "complete", "fixed")):
        return "resolved"
    if closed_flag or any(w in words for w in ("closed", "cancel")):
        return "closed"
    return "open"


def classify(
    tenant_id: str, obs: TicketObservation, previous: dict[str, Any] | None
) -> tuple[TicketEvent, dict[str, Any]]:
    """The event this observation amounts to, and the ticket's state to remember after it."""
    prev = previous or {}
    merged = {
        **prev,
        **{k: v for k, v in obs.fields.items() if k in SNAPSHOT_FIELDS},
        "ticket_id": obs.ticket_id,
    }
    merged.setdefault("title", f"Ticket {obs.ticket_id}")
    closed_before = prev.get("_closed_flag")
    closed_now = obs.closed_flag if obs.closed_flag is not None else closed_before
    escalation = None
    kind: TicketEventKind
    if obs.kind is not None:
        kind = obs.kind
    elif not prev:
        kind = "updated"  # first sight of a ticket created before we listened: no diff to read
    else:
        was, now = phase(prev.get("status"), closed_before), phase(merged.get("status"), closed_now)
        moved = {
            f: (prev.get(f), merged.get(f))
            for f in ("tier", "board", "assignee")
            if prev.get(f) != merged.get(f)
        }
        if was != "open" and now == "open":
            kind = "reopened"
        elif now != "open" and now != was:
            kind = now  # resolved, or closed (after a resolution too)
        elif moved:
            kind = "escalated"
            escalation = Escalation(
                **{f"from_{f}": a for f, (a, _) in moved.items()},
                **{f"to_{f}": b for f, (_, b) in moved.items()},
            )
        elif prev.get("status") != merged.get("status"):
            kind = "status_changed"
        else:
            kind = "updated"
    snapshot = TicketSnapshot(**{k: v for k, v in merged.items() if k in SNAPSHOT_FIELDS})
    event = TicketEvent(
        event_id=derive_event_id(tenant_id, "ticket", obs.source_system, obs.event_ref),
        tenant_id=tenant_id,
        occurred_at=obs.occurred_at,
        source=EventSource(system=obs.source_system, reference=obs.event_ref, link=snapshot.url),
        payload=TicketEventPayload(
            kind=kind,
            ticket=snapshot,
            note=obs.note,
            escalation=escalation,
            previous_status=prev.get("status") if prev.get("status") != merged.get("status") else None,
        ),
    )
    state = {**merged, "_closed_flag": closed_now}
    return event, state
