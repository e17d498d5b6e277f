"""NinjaOne webhooks: condition activities, triggered and reset, grouped by `seriesUid`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from libs.common.events import AlertPayload, AlertReceived, EventSource, derive_event_id
from libs.common.jsontypes import Float, Int
from services.ingest.adapters.common import MAX_EPOCH_MS, SourceModel, flat_labels, from_epoch, severity

SYSTEM = "ninjaone"
RESET_WORDS = ("RESET", "RESOLVED", "CLOSED", "CLEARED")


class NinjaDevice(SourceModel):
    id: Int | None = None
    systemName: str | None = None
    displayName: str | None = None
    dnsName: str | None = None
    organizationId: Int | None = None
    locationId: Int | None = None


class NinjaActivity(SourceModel):
    id: Int
    activityTime: Float = Field(ge=0, le=MAX_EPOCH_MS)
    deviceId: Int | None = None
    severity: str = "NONE"
    priority: str = "NONE"
    seriesUid: str = Field(min_length=1, max_length=200)
    activityType: str = ""
    statusCode: str = ""
    status: str = ""
    sourceName: str | None = None
    subject: str | None = None
    message: str | None = None
    data: dict[str, Any] | None = None
    device: NinjaDevice | None = None


def to_events(doc: NinjaActivity, tenant_id: str) -> list[AlertReceived]:
    at = from_epoch(doc.activityTime)
    reset = any(w in f"{doc.statusCode} {doc.status}".upper() for w in RESET_WORDS)
    status = "resolved" if reset else "firing"
    dev = doc.device
    labels = flat_labels(doc.data, "data.")
    labels.update(
        {"activity_type": doc.activityType, "status_code": doc.statusCode, "priority": doc.priority}
    )
    return [
        AlertReceived(
            event_id=derive_event_id(tenant_id, "alert", SYSTEM, doc.seriesUid, status, str(doc.id)),
            tenant_id=tenant_id,
            occurred_at=at,
            source=EventSource(system=SYSTEM, reference=str(doc.id)),
            payload=AlertPayload(
                fingerprint=doc.seriesUid,
                status=status,
                severity=severity(doc.severity, default="info" if doc.severity == "NONE" else "warning"),
                title=(doc.subject or doc.message or doc.sourceName or doc.seriesUid)[:1000],
                description=(doc.message or "")[:20000],
                device=(dev.systemName or dev.displayName or dev.dnsName)
                if dev
                else (str(doc.deviceId) if doc.deviceId is not None else None),
                site=str(dev.locationId) if dev and dev.locationId is not None else None,
                labels=labels,
                starts_at=None if reset else at,
                ends_at=at if reset else None,
            ),
        )
    ]


def tenant_refs(doc: NinjaActivity) -> set[str]:
    org = doc.device.organizationId if doc.device else None
    return {str(org)} if org is not None else set()
