"""HaloPSA webhooks: ticket and action objects, one or many per delivery."""

from __future__ import annotations

from pydantic import Field

from libs.common.events import TicketNote, utcnow
from libs.common.jsontypes import Bool, Int, Timestamp
from services.ingest.adapters.common import SourceModel, TicketObservation, as_utc, content_ref

SYSTEM = "halopsa"
CLOSED_STATUS_ID = 9  # Halo's default "Closed"


class HaloTicket(SourceModel):
    id: Int
    summary: str = ""
    details: str | None = None
    status_id: Int | None = None
    status_name: str | None = None
    priority_id: Int | None = None
    client_id: Int | None = None
    site_name: str | None = None
    agent_id: Int | None = None
    agent_name: str | None = None
    team: str | None = None
    user_email: str | None = None
    dateoccurred: Timestamp | None = None
    lastactiondate: Timestamp | None = None


class HaloAction(SourceModel):
    id: Int
    ticket_id: Int
    note: str = ""
    outcome: str | None = None
    hiddenfromuser: Bool = True
    who: str | None = None
    datetime_: Timestamp | None = Field(default=None, alias="datetime")


class HaloWebhook(SourceModel):
    """A delivery: lists of tickets and actions (a bare object or list is accepted too)."""

    tickets: list[HaloTicket] = Field(default_factory=list, max_length=5000)
    actions: list[HaloAction] = Field(default_factory=list, max_length=5000)


# What one delivery may be: a ticket, an action, a list of them, or an object holding lists.
Delivery = HaloWebhook | HaloAction | HaloTicket | list[HaloAction | HaloTicket]


def as_webhook(body: Delivery) -> HaloWebhook:
    """Halo posts a ticket, an action, a list of them, or an object holding lists."""
    if isinstance(body, HaloWebhook):
        return body
    items = body if isinstance(body, list) else [body]
    return HaloWebhook(
        tickets=[i for i in items if isinstance(i, HaloTicket)],
        actions=[i for i in items if isinstance(i, HaloAction)],
    )


def to_observations(doc: HaloWebhook) -> list[TicketObservation]:
    out = []
    for t in doc.tickets:
        status = t.status_name or (
            "Closed"
            if t.status_id == CLOSED_STATUS_ID
            else f"status {t.status_id}"
            if t.status_id is not None
            else None
        )
        fields = {
            "title": t.summary or None,
            "description": t.details,
            "status": status,
            "priority": str(t.priority_id) if t.priority_id is not None else None,
            "board": t.team,
            "assignee": t.agent_name or (str(t.agent_id) if t.agent_id else None),
            "requester": t.user_email,
            "site": t.site_name,
        }
        when = t.lastactiondate or t.dateoccurred
        at = as_utc(when) if when else utcnow()
        out.append(
            TicketObservation(
                SYSTEM,
                content_ref(t.model_dump(mode="json")),
                at,
                str(t.id),
                fields={k: v for k, v in fields.items() if v is not None},
                company_ref=str(t.client_id) if t.client_id is not None else None,
            )
        )
    for a in doc.actions:
        at = as_utc(a.datetime_) if a.datetime_ else utcnow()
        out.append(
            TicketObservation(
                SYSTEM,
                f"action:{a.id}",
                at,
                str(a.ticket_id),
                kind="note_added",
                note=TicketNote(
                    note_id=str(a.id),
                    text=(a.note or a.outcome or "(no text)")[:20000],
                    internal=a.hiddenfromuser,
                    author=a.who,
                    created_at=at,
                ),
            )
        )
    return out
