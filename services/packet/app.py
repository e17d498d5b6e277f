"""Wiring of the packet service.

Today it consumes tickets.events.v1, tickets.triaged.v1 and signals.clustered.v1, records and
counts them per tenant and audits what it received. Escalation packets land with their own
issue; until then it writes nothing into any PSA.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from libs.common.counting import build_counting_service
from libs.common.events import SignalClustered, TicketEvent, TicketTriaged
from libs.common.service import Runtime
from services.packet.settings import PacketSettings


def build(settings: PacketSettings) -> tuple[Runtime, FastAPI]:
    return build_counting_service(
        settings,
        topics=[SignalClustered.topic, TicketEvent.topic, TicketTriaged.topic],
        migrations_dir=Path(__file__).parent / "migrations",
        title="msp packet",
        description=__doc__ or "",
    )
