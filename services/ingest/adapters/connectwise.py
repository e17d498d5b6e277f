"""ConnectWise PSA (Manage) callbacks: the ticket travels as a JSON string in `Entity`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from libs.common.events import TicketNote, utcnow
from libs.common.jsontypes import Bool, Int, Timestamp
from services.ingest.adapters.common import SourceModel, TicketObservation, as_utc

SYSTEM = "connectwise"


class CWRef(SourceModel):
    id: Int | None = None
    identifier: str | None = None
    name: str | None = None


class CWTicket(SourceModel):
    id: Int
    summary: str = Field(default="", max_length=1000)
    initialDescription: str | None = None
    board: CWRef | None = None
    status: CWRef | None = None
    priority: CWRef | None = None
    company: CWRef | None = None
    owner: CWRef | None = None
    contactEmailAddress: str | None = None
    contactName: str | None = None
    siteName: str | None = None
    closedFlag: Bool | None = None
    info: dict[str, Any] | None = Field(default=None, alias="_info")


class CWNote(SourceModel):
    id: Int
    ticketId: Int
    text: str = ""
    internalAnalysisFlag: Bool = False
    detailDescriptionFlag: Bool = False
    resolutionFlag: Bool = False
    member: CWRef | None = None
    dateCreated: Timestamp | None = None


class ConnectWiseCallback(SourceModel):
    MessageId: str = Field(min_length=1, max_length=200)
    Action: str = Field(pattern=r"^(?i:added|updated|deleted)$")
    Type: str = Field(min_length=1)
    ID: Int
    CompanyId: str | None = None
    FromUrl: str | None = None
    Entity: dict[str, Any] | None = None
    Metadata: dict[str, Any] | None = None

    @field_validator("Entity", mode="before")
    @classmethod
    def _entity_json(cls, value: Any) -> Any:
        # ConnectWise sends the entity as a JSON document inside a string.
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"Entity is not valid JSON: {exc.msg}") from None
        return value


def _name(ref: CWRef | None) -> str | None:
    return (ref.name or ref.identifier) if ref else None


def to_observations(doc: ConnectWiseCallback) -> list[TicketObservation]:
    action = doc.Action.lower()
    kind_type = doc.Type.lower()
    if kind_type in ("ticket", "serviceticket"):
        if doc.Entity is None:
            if action != "deleted":
                raise ValueError("Entity is required for an added or updated ticket")
            return [
                TicketObservation(
                    SYSTEM, doc.MessageId, utcnow(), str(doc.ID), kind="closed", closed_flag=True
                )
            ]
        t = CWTicket.model_validate(doc.Entity)
        updated = (t.info or {}).get("lastUpdated")
        fields = {
            "title": t.summary or f"Ticket {t.id}",
            "status": _name(t.status),
            "priority": _name(t.priority),
            "board": _name(t.board),
            "assignee": _name(t.owner),
            "requester": t.contactEmailAddress or t.contactName,
            "site": t.siteName,
        }
        if t.initialDescription is not None:
            fields["description"] = t.initialDescription[:20000]
        return [
            TicketObservation(
                SYSTEM,
                doc.MessageId,
                as_utc(datetime.fromisoformat(updated)) if updated else utcnow(),
                str(t.id),
                fields={k: v for k, v in fields.items() if v is not None},
                kind="created" if action == "added" else ("closed" if action == "deleted" else None),
                company_ref=str(t.company.id) if t.company and t.company.id is not None else None,
                closed_flag=t.closedFlag,
            )
        ]
    if kind_type in ("ticketnote", "servicenote", "note") and doc.Entity is not None and action == "added":
        n = CWNote.model_validate(doc.Entity)
        return [
            TicketObservation(
                SYSTEM,
                doc.MessageId,
                as_utc(n.dateCreated) if n.dateCreated else utcnow(),
                str(n.ticketId),
                kind="note_added",
                note=TicketNote(
                    note_id=str(n.id),
                    text=n.text[:20000],
                    internal=n.internalAnalysisFlag or not n.detailDescriptionFlag,
                    author=_name(n.member),
                    created_at=as_utc(n.dateCreated) if n.dateCreated else None,
                ),
            )
        ]
    return []  # callbacks for other entity types are not tickets: acknowledged and ignored
