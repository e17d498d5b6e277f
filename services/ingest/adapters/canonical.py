"""The platform's own canonical JSON for alerts and ticket events, mapped to v1 events.

Pure mapping, no I/O. The event id is derived from the source's own identity of the event, so
a sender that retries the same post gets the same id back and nothing happens twice.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from libs.common.events import (
    AlertPayload,
    AlertReceived,
    Escalation,
    EventSource,
    Severity,
    TenantId,
    TicketEvent,
    TicketEventKind,
    TicketEventPayload,
    TicketNote,
    TicketSnapshot,
    derive_event_id,
    utcnow,
)
from libs.common.jsontypes import AwareTimestamp, RequestBody, text_schema

SystemName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


class _In(RequestBody):
    model_config = ConfigDict(extra="forbid", json_schema_extra=text_schema)


class CanonicalAlert(_In):
    """An alert as any monitoring tool can post it."""

    tenant_id: TenantId | None = Field(default=None, description="Optional; must match the key's tenant.")
    source_system: SystemName = "canonical"
    fingerprint: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    status: str = Field(pattern=r"^(firing|resolved)$", default="firing")
    severity: Severity = "warning"
    title: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    description: Annotated[str, StringConstraints(max_length=20000)] = ""
    device: str | None = Field(default=None, max_length=500)
    site: str | None = Field(default=None, max_length=500)
    group_key: str | None = Field(default=None, max_length=1000)
    labels: dict[str, str] = Field(default_factory=dict)
    starts_at: AwareTimestamp | None = None
    ends_at: AwareTimestamp | None = None
    url: str | None = Field(default=None, max_length=2000)


class CanonicalTicketEvent(_In):
    """A ticket event as any PSA can post it."""

    tenant_id: TenantId | None = Field(default=None, description="Optional; must match the key's tenant.")
    source_system: SystemName = "canonical"
    event_ref: str | None = Field(
        default=None,
        max_length=500,
        description="The source's own id of this event, if it has one; used for idempotency.",
    )
    kind: TicketEventKind
    occurred_at: AwareTimestamp | None = None
    ticket: TicketSnapshot
    note: TicketNote | None = None
    escalation: Escalation | None = None
    previous_status: str | None = None


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def alert_event(tenant_id: str, alert: CanonicalAlert) -> AlertReceived:
    # One firing and one resolution of the same alert are two events; a re-post is the same one.
    event_id = derive_event_id(
        tenant_id,
        "alert",
        alert.source_system,
        alert.fingerprint,
        alert.status,
        _iso(alert.starts_at),
        _iso(alert.ends_at),
    )
    occurred = (alert.ends_at if alert.status == "resolved" else alert.starts_at) or utcnow()
    return AlertReceived(
        event_id=event_id,
        tenant_id=tenant_id,
        occurred_at=occurred,
        source=EventSource(system=alert.source_system, reference=alert.fingerprint, link=alert.url),
        payload=AlertPayload(
            fingerprint=alert.fingerprint,
            status=alert.status,
            severity=alert.severity,
            title=alert.title,
            description=alert.description,
            device=alert.device,
            site=alert.site,
            group_key=alert.group_key,
            labels=alert.labels,
            starts_at=alert.starts_at,
            ends_at=alert.ends_at,
            url=alert.url,
        ),
    )


def ticket_event(tenant_id: str, ev: CanonicalTicketEvent) -> TicketEvent:
    # Without the source's own event id, the content is the identity: a retried post is
    # byte-for-byte the same event, a real update differs somewhere.
    identity = ev.event_ref or hashlib.sha256(ev.model_dump_json(exclude={"tenant_id"}).encode()).hexdigest()
    return TicketEvent(
        event_id=derive_event_id(tenant_id, "ticket", ev.source_system, identity),
        tenant_id=tenant_id,
        occurred_at=ev.occurred_at or utcnow(),
        source=EventSource(
            system=ev.source_system, reference=ev.event_ref or ev.ticket.ticket_id, link=ev.ticket.url
        ),
        payload=TicketEventPayload(
            kind=ev.kind,
            ticket=ev.ticket,
            note=ev.note,
            escalation=ev.escalation,
            previous_status=ev.previous_status,
        ),
    )
