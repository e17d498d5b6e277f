"""What the packet service knows, typed: the ticket (the latest snapshot, each field as last
reported, an empty report keeping the known value; its notes, its escalations and whether it
is open; built from `tickets.events.v1` one event at a time, idempotently) and the signals
around it (their latest revision and every member alert id seen). Pure: no I/O."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from libs.common.events import Escalation, SignalPayload, TicketEvent, TicketNote, TicketSnapshot


class KnownEscalation(Escalation):
    event_id: str  # the ticket event that reported it (a redelivery adds nothing)
    at: str  # when, ISO 8601


class KnownTicket(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket_id: str
    snapshot: TicketSnapshot
    notes: list[TicketNote] = Field(default_factory=list)
    escalations: list[KnownEscalation] = Field(default_factory=list)
    escalated: bool = False
    closed: bool = False

    @property
    def open_escalation(self) -> bool:
        return self.escalated and not self.closed


def merge_ticket(known: KnownTicket | None, event: TicketEvent) -> KnownTicket:
    """The ticket as known so far, with this event applied (idempotent: a redelivered event
    adds no second note or escalation)."""
    p = event.payload
    reported = p.ticket.model_dump()
    merged = known.snapshot.model_dump() if known else {}
    for key, value in reported.items():
        if value not in (None, "", []) or key not in merged:
            merged[key] = value
    notes = list(known.notes) if known else []
    if p.note is not None and all(n.note_id != p.note.note_id for n in notes):
        notes.append(p.note)
    escalations = list(known.escalations) if known else []
    escalated = known.escalated if known else False
    if p.kind == "escalated" and all(e.event_id != str(event.event_id) for e in escalations):
        escalations.append(
            KnownEscalation(
                **(p.escalation.model_dump() if p.escalation else {}),
                event_id=str(event.event_id),
                at=event.occurred_at.isoformat(),
            )
        )
        escalated = True
    closed = known.closed if known else False
    if p.kind in ("resolved", "closed"):
        closed = True
    elif p.kind == "reopened":
        closed = False
    return KnownTicket(
        ticket_id=known.ticket_id if known else p.ticket.ticket_id,
        snapshot=TicketSnapshot.model_validate(merged),
        notes=notes,
        escalations=escalations,
        escalated=escalated,
        closed=closed,
    )


class KnownSignal(SignalPayload):
    """A signal's latest revision, with every member alert id the service has seen of it (the
    revision itself names only the most recent)."""

    alert_ids: list[str] = Field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.state in ("resolved", "merged")
