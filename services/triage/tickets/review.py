"""Engineers' reviews of triage and the drift they show: a category set on a ticket after
triage decided it confirms or corrects the decision (or decides after an abstention); the
share corrected and the mean confidence over a sliding window are the drift gauges, and a
correction is audited. The PSA's echo of a category the platform set itself (`auto`) is no
review."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge
from sqlalchemy import Engine

from libs.common import sla
from libs.common.audit import AuditEmitter
from libs.common.events import TicketEvent
from services.triage.tickets import store

_REVIEWS = Counter(
    "msp_triage_ticket_reviews_total", "Categories engineers set after triage", ["outcome"]
)  # outcome: corrected (the counter-metric), confirmed, decided (after an abstention)
_DRIFT_CORRECTED = Gauge(
    "msp_triage_drift_correction_share",
    "Share of reviewed triage results corrected (sliding window)",
    ["tenant_id"],
)
_DRIFT_CONFIDENCE = Gauge(
    "msp_triage_drift_mean_confidence", "Mean category confidence (sliding window)", ["tenant_id"]
)


def applied(decision: dict[str, Any]) -> bool:
    """Whether a stored decision asked a PSA writer to set its category (`auto` mode)."""
    if decision.get("mode") != "auto" or not decision.get("result"):
        return False
    return bool(json.loads(decision["result"]).get("payload", {}).get("apply_category"))


@dataclass
class Drift:
    confidences: deque[float]
    reviews: deque[bool]  # True: corrected


class Reviews:
    def __init__(self, *, engine: Engine, audit: AuditEmitter, window: int) -> None:
        self.engine = engine
        self.audit = audit
        self.window = window
        self._drift: dict[str, Drift] = {}

    async def review(self, event: TicketEvent, prior: dict[str, Any]) -> None:
        """The ticket's category as the event carries it, against the stored decision."""
        final = event.payload.ticket.category
        if final is None or final in (prior["input_category"], prior["final_category"]):
            return
        tenant = event.tenant_id
        if final == prior["label"] and applied(prior):
            # The PSA echoing the category the platform set itself (`auto`): not an engineer's
            # review, so it neither confirms the decision nor feeds the drift figures.
            return
        if prior["label"] is None:
            outcome = "decided"
        else:
            outcome = "corrected" if final != prior["label"] else "confirmed"
        await asyncio.to_thread(
            store.mark_final, self.engine, tenant, prior["ticket_id"], final, outcome == "corrected"
        )
        _REVIEWS.labels(outcome).inc()
        if outcome == "corrected":
            sla.CORRECTIONS.labels(sla.tenant_label(tenant), "triage_corrected").inc()
        if outcome != "decided":
            drift = self._of(tenant)
            drift.reviews.append(outcome == "corrected")
            _DRIFT_CORRECTED.labels(tenant).set(sum(drift.reviews) / len(drift.reviews))
        if outcome == "corrected":
            await self.audit.emit(
                tenant_id=tenant,
                action="triage.ticket.corrected",
                subject_kind="ticket",
                subject_id=prior["ticket_id"],
                cause_id=str(event.event_id),
                details={
                    "triaged": prior["label"],
                    "set_by_engineer": final,
                    "confidence": prior["confidence"],
                },
            )

    def decided(self, tenant: str, confidence: float) -> None:
        """A decision was published: its confidence joins the tenant's window."""
        drift = self._of(tenant)
        drift.confidences.append(confidence)
        _DRIFT_CONFIDENCE.labels(tenant).set(float(np.mean(drift.confidences)))

    def _of(self, tenant: str) -> Drift:
        found = self._drift.get(tenant)
        if found is None:
            found = self._drift[tenant] = Drift(deque(maxlen=self.window), deque(maxlen=self.window))
        return found
