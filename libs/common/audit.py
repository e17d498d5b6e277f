"""Audit events: what every service says about what it did, published to `audit.events.v1`."""

from __future__ import annotations

from typing import Any, Literal

from libs.common.bus import EventProducer
from libs.common.events import AuditEvent, AuditPayload, EventSource, derive_event_id, utcnow
from libs.common.telemetry import current_trace_id


def audit_event(
    *,
    service: str,
    tenant_id: str,
    action: str,
    subject_kind: str,
    subject_id: str,
    cause_id: str,
    actor: str | None = None,
    outcome: Literal["ok", "rejected", "failed"] = "ok",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Build an audit event whose id is derived from its cause, so a retry records it once."""
    return AuditEvent(
        event_id=derive_event_id(tenant_id, "audit", service, action, subject_id, cause_id),
        tenant_id=tenant_id,
        occurred_at=utcnow(),
        source=EventSource(system=f"msp.{service}", reference=cause_id),
        payload=AuditPayload(
            actor=actor or f"service:{service}",
            action=action,
            subject_kind=subject_kind,
            subject_id=subject_id,
            outcome=outcome,
            details=details or {},
            trace_id=current_trace_id(),
        ),
    )


class AuditEmitter:
    def __init__(self, producer: EventProducer, service: str) -> None:
        self.producer = producer
        self.service = service

    async def emit(self, **kwargs: Any) -> AuditEvent:
        event = audit_event(service=self.service, **kwargs)
        await self.producer.publish(event)
        return event
