"""Wiring of the triage service.

Today it consumes alerts.raw.v1 and tickets.events.v1, records and counts them per
tenant and audits what it received. Alert clustering and ticket classification land with their
own issues; until then it decides nothing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from libs.common.counting import build_counting_service
from libs.common.events import AlertReceived, TicketEvent
from libs.common.service import Runtime
from services.triage.settings import TriageSettings


def build(settings: TriageSettings) -> tuple[Runtime, FastAPI]:
    return build_counting_service(
        settings,
        topics=[AlertReceived.topic, TicketEvent.topic],
        migrations_dir=Path(__file__).parent / "migrations",
        title="msp triage",
        description=__doc__ or "",
    )
