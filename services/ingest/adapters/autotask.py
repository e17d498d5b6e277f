"""Autotask webhooks for tickets and ticket notes (signed with HMAC-SHA1).

Autotask sends the fields that changed (plus those configured to be always sent), so the
lifecycle fills the rest from the last known state of the ticket.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from libs.common.events import TicketNote, utcnow
from libs.common.jsontypes import Int, Timestamp
from services.ingest.adapters.common import SourceModel, TicketObservation, as_utc

SYSTEM = "autotask"
COMPLETE_STATUS = 5  # Autotask's system status "Complete"


class AutotaskWebhook(SourceModel):
    Action: Literal["Create", "Update", "Delete", "Deactivated"]
    Guid: str = Field(min_length=1, max_length=100)
    EntityType: str = Field(min_length=1)
    Id: Int
    Fields: dict[str, Any] = Field(default_factory=dict)
    EventTime: Timestamp | None = None
    SequenceNumber: Int = 0
    PersonID: Int | None = None


def _status(value: Any) -> str | None:
    if value is None:
        return None
    return "Complete" if value == COMPLETE_STATUS else f"status {value}"


def to_observations(doc: AutotaskWebhook) -> list[TicketObservation]:
    at = as_utc(doc.EventTime) if doc.EventTime else utcnow()
    ref = f"{doc.EntityType}:{doc.Id}:{doc.SequenceNumber}:{at.isoformat()}"
    f = {k[:1].lower() + k[1:]: v for k, v in doc.Fields.items()}  # Autotask casing varies by version
    entity = doc.EntityType.lower().rstrip("s")
    if entity == "ticket" and doc.Action in ("Create", "Update", "Delete"):
        fields = {
            "title": f.get("title"),
            "description": f.get("description"),
            "status": _status(f.get("status")),
            "priority": str(f["priority"]) if f.get("priority") is not None else None,
            "board": f"queue {f['queueID']}" if f.get("queueID") is not None else None,
            "assignee": f"resource {f['assignedResourceID']}"
            if f.get("assignedResourceID") is not None
            else None,
        }
        return [
            TicketObservation(
                SYSTEM,
                ref,
                at,
                str(doc.Id),
                fields={k: v for k, v in fields.items() if v is not None},
                kind={"Create": "created", "Delete": "closed"}.get(doc.Action),  # type: ignore[arg-type]
                company_ref=str(f["companyID"]) if f.get("companyID") is not None else None,
                closed_flag=True if doc.Action == "Delete" else None,
            )
        ]
    if entity == "ticketnote" and doc.Action == "Create" and f.get("ticketID") is not None:
        text = "\n".join(str(x) for x in (f.get("title"), f.get("description")) if x)
        return [
            TicketObservation(
                SYSTEM,
                ref,
                at,
                str(f["ticketID"]),
                kind="note_added",
                # Publish 1 is "All Autotask Users": not shown to the client; anything else is
                # treated as client-visible, the cautious reading.
                note=TicketNote(
                    note_id=str(doc.Id),
                    text=text[:20000] or "(empty note)",
                    internal=f.get("publish") == 1,
                    created_at=at,
                ),
            )
        ]
    return []
