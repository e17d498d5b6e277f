"""PagerDuty Events API v2: trigger, acknowledge and resolve, deduplicated by `dedup_key`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field, model_validator

from libs.common.events import AlertPayload, AlertReceived, EventSource, derive_event_id, utcnow
from services.ingest.adapters.common import SourceModel, content_ref, flat_labels, severity

SYSTEM = "pagerduty"


class PDPayload(SourceModel):
    summary: str = Field(min_length=1, max_length=1024)
    source: str = Field(min_length=1, max_length=255)
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: AwareDatetime | None = None
    component: str | None = None
    group: str | None = None
    class_: str | None = Field(default=None, alias="class")
    custom_details: dict[str, Any] | str | None = None


class PagerDutyEvent(SourceModel):
    routing_key: str = Field(min_length=1, max_length=200)
    event_action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: str | None = Field(default=None, max_length=255)
    payload: PDPayload | None = None
    client: str | None = None
    client_url: str | None = None

    @model_validator(mode="after")
    def _payload_for_trigger(self) -> PagerDutyEvent:
        # The Events API's own rules: a trigger needs a payload, the others a dedup_key.
        if self.event_action == "trigger" and self.payload is None:
            raise ValueError("payload is required when event_action is trigger")
        if self.event_action != "trigger" and not self.dedup_key:
            raise ValueError("dedup_key is required to acknowledge or resolve")
        return self


def to_events(doc: PagerDutyEvent, tenant_id: str) -> list[AlertReceived]:
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


def tenant_refs(doc: PagerDutyEvent) -> set[str]:
    return set()
