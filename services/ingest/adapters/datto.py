"""Datto RMM alert webhooks (the fields Datto's webhook template offers for an alert)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, field_validator

from libs.common.events import AlertPayload, AlertReceived, EventSource, derive_event_id
from libs.common.jsontypes import Bool
from services.ingest.adapters.common import (
    MAX_EPOCH_MS,
    SourceModel,
    as_utc,
    flat_labels,
    from_epoch,
    severity,
)

SYSTEM = "datto-rmm"
# Datto's priorities, onto the platform's severities.
PRIORITY = {
    "critical": "critical",
    "high": "high",
    "moderate": "warning",
    "low": "low",
    "information": "info",
}


class DattoAlert(SourceModel):
    alertUid: str = Field(min_length=1, max_length=200)
    alertType: str | None = None
    priority: str = "Moderate"
    alertMessage: str = Field(min_length=1, max_length=5000)
    alertContext: dict[str, Any] | str | None = None
    deviceUid: str | None = None
    hostname: str | None = None
    siteUid: str | None = None
    siteName: str | None = None
    # Datto sends epoch milliseconds or ISO 8601 (see _epoch_or_iso).
    timestamp: Annotated[
        datetime,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "format": "date-time"},
                    {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_MS},
                ]
            }
        ),
    ]
    resolved: Bool = False
    url: str | None = Field(default=None, alias="alertUrl")

    @field_validator("timestamp", mode="before")
    @classmethod
    def _epoch_or_iso(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | str | datetime):
            raise ValueError("must be epoch milliseconds or an ISO 8601 string")
        return from_epoch(float(value)) if isinstance(value, int | float) else value


def to_events(doc: DattoAlert, tenant_id: str) -> list[AlertReceived]:
    at = as_utc(doc.timestamp)
    status = "resolved" if doc.resolved else "firing"
    context = doc.alertContext
    labels = flat_labels(context if isinstance(context, dict) else None, "context.")
    if doc.alertType:
        labels["alert_type"] = doc.alertType
    if doc.deviceUid:
        labels["device_uid"] = doc.deviceUid
    return [
        AlertReceived(
            event_id=derive_event_id(tenant_id, "alert", SYSTEM, doc.alertUid, status),
            tenant_id=tenant_id,
            occurred_at=at,
            source=EventSource(system=SYSTEM, reference=doc.alertUid, link=doc.url),
            payload=AlertPayload(
                fingerprint=doc.alertUid,
                status=status,
                severity=severity(PRIORITY.get(doc.priority.strip().lower())),
                title=doc.alertMessage[:1000],
                description=(context if isinstance(context, str) else "")[:20000],
                device=doc.hostname or doc.deviceUid,
                site=doc.siteName or doc.siteUid,
                labels=labels,
                starts_at=None if doc.resolved else at,
                ends_at=at if doc.resolved else None,
                url=doc.url,
            ),
        )
    ]


def tenant_refs(doc: DattoAlert) -> set[str]:
    return {doc.siteUid} if doc.siteUid else set()
