"""Wiring of the automation service.

Today it consumes tickets.triaged.v1 and automation.results.v1, records and counts them per
tenant and audits what it received. Actions, connectors and automations land with their own
issues; until then it runs nothing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from libs.common.counting import build_counting_service
from libs.common.events import AutomationResult, TicketTriaged
from libs.common.service import Runtime
from services.automation.settings import AutomationSettings


def build(settings: AutomationSettings) -> tuple[Runtime, FastAPI]:
    return build_counting_service(
        settings,
        topics=[AutomationResult.topic, TicketTriaged.topic],
        migrations_dir=Path(__file__).parent / "migrations",
        title="msp automation",
        description=__doc__ or "",
    )
