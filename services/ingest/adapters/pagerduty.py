"""PagerDuty Events API v2: trigger, acknowledge and resolve, deduplicated by `dedup_key`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from libs.common.events import AlertPayload, AlertReceived, EventSource, derive_event_id, utcnow
from libs.common.jsontypes import AwareTimestamp
from services.ingest.adapters.common import SourceModel, content_ref, flat_labels, severity

SYSTEM = "pagerduty"


class PDPayload(SourceModel):
    summary: str = Field(min_length=1, max_length=1024)
    source: str = Field(min_length=1, max_length=255)
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: AwareTimestamp | None = None
    component: str | None = None
    group: str | None = None
    class_: str | None = Field(default=None, alias="class")
    custom_details: dict[str, Any] | str | None = None


class _PagerDutyBase(SourceModel):
    routing_key: str = Field(min_length=1, max_length=200)
    client: str | None = None
    client_url: str | None = None


# The Events API's own rules, in the schema: a trigger needs a payload, the others a dedup_key.
class PagerDutyTrigger(_PagerDutyBase):
    event_action: Literal["trigger"]
    dedup_key: str | None = Field(default=None, max_length=255)
    payload: PDPayload


class PagerDutyFollowUp(_PagerDutyBase):
    event_action: Literal["acknowledge", "resolve"]
    dedup_key: str = Field(min_length=1, max_length=255)
    payload: PDPayload | None = None


PagerDutyEvent = Annotated[PagerDutyTrigger | PagerDutyFollowUp, Field(discriminator="event_action")]
EVENT: TypeAdapter[PagerDutyTrigger | PagerDutyFollowUp] = TypeAdapter(PagerDutyEvent)


def to_events(doc: PagerDutyTrigger | PagerDutyFollowUp, tenant_id: str) -> list[AlertReceived]:
    p = doc.payload
    # PagerDuty makes up a dedup key when a trigger has none; so do we, from the content.
    fingerprint = doc.dedup_key or content_ref(doc.model_dump(mode="json", exclude={"routing_key"}))
    details = p.custom_details if p else None
    labels = flat_labels(details if isinstance(details, dict) else None, "detail.")
    if p:
        labels.update(
            {k: v for k, v in {"component": p.component, "group": p.group, "class": p.class_}.items() if v}
        )
    labels["pagerduty.action"] = doc.event_action
    occurred = (p.timestamp if p and p.timestamp else None) or utcnow()
    return [
        AlertReceived(
            event_id=derive_event_id(
                tenant_id,
                "alert",
                SYSTEM,
                fingerprint,
                doc.event_action,
                content_ref(doc.model_dump(mode="json", exclude={"routing_key"})),
            ),
            tenant_id=tenant_id,
            occurred_at=occurred,
            source=EventSource(system=SYSTEM, reference=fingerprint, link=doc.client_url),
            payload=AlertPayload(
                fingerprint=fingerprint,
                status="resolved" if doc.event_action == "resolve" else "firing",
                severity=severity(p.severity if p else None),
                title=(p.summary if p else f"{doc.event_action} {fingerprint}")[:1000],
                description=(details if isinstance(details, str) else "")[:20000],
                device=p.source if p else None,
                group_key=p.group if p else None,
                labels=labels,
                starts_at=occurred if doc.event_action == "trigger" else None,
                ends_at=occurred if doc.event_action == "resolve" else None,
                url=doc.client_url,
            ),
        )
    ]


def tenant_refs(doc: PagerDutyTrigger | PagerDutyFollowUp) -> set[str]:
    return set()
