"""Wiring of the packet service.

It follows `tickets.events.v1`, `tickets.triaged.v1` and `signals.clustered.v1` per tenant;
when a ticket escalates it builds an escalation packet (`packets.escalation.v1`), a new version
whenever what the packet would say changes, and posts each version once into the tenant's PSA
as an internal note (see `engine.py`). What its consumer took in is counted per tenant and
topic (`/v1/counts`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from libs.common.embeddings import shared_embedder
from libs.common.events import AutomationResult, AutomationRun, SignalClustered, TicketEvent, TicketTriaged
from libs.common.inbox import Counted
from libs.common.reasoning import reasoning_from_settings
from libs.common.service import Runtime, counts_router
from services.packet import tables
from services.packet.api import make_router
from services.packet.engine import Packets
from services.packet.kb.base import KnowledgeBase
from services.packet.settings import PacketSettings


@dataclass(frozen=True)
class PacketService:
    """The wired service: its runtime and app, and the parts tests and tools reach for."""

    rt: Runtime
    app: FastAPI
    packets: Packets
    kb: KnowledgeBase


def build(settings: PacketSettings) -> tuple[Runtime, FastAPI]:
    service = assemble(settings)
    return service.rt, service.app


def assemble(settings: PacketSettings) -> PacketService:
    topics = [SignalClustered.topic, TicketEvent.topic, TicketTriaged.topic]
    rt = Runtime(settings, migrations_dir=Path(__file__).parent / "migrations")
    app = rt.make_app("msp packet", __doc__ or "")
    counted = Counted(rt.engine, tables.inbox)
    embedder = shared_embedder()
    kb = KnowledgeBase(rt.engine, embedder)

    async def warm() -> None:
        await asyncio.to_thread(embedder.warm)

    async def nothing() -> None:
        return None

    # The knowledge base's searches and runbook uploads embed text: the model is loaded at
    # start-up, and the service is ready once it is (not on the first request, seconds later).
    rt.add_component("embeddings", warm, nothing, lambda: embedder.loaded)
    packets = Packets(
        engine=rt.engine,
        producer=rt.producer,
        audit=rt.audit,
        kb=kb,
        reasoning=reasoning_from_settings(settings, engine=rt.engine),
        page_base_url=settings.effective_page_base_url,
        triage_url=settings.triage_url,
        check_match_threshold=settings.check_match_threshold,
        retry_base_s=settings.psa_retry_base_s,
        retry_max_s=settings.psa_retry_max_s,
        max_attempts=settings.psa_max_attempts,
        psa_timeout_s=settings.psa_timeout_s,
        psa_concurrency=settings.psa_concurrency,
        lease_s=settings.psa_lease_s,
        due_batch=settings.psa_due_batch,
        signal_update_every_s=settings.signal_update_every_s,
        namespace=settings.topic_namespace,
        box=settings.secret_box(),
    )
    rt.add_component("packets", packets.start, packets.stop, lambda: packets.running)
    # One group for everything a packet is built from: keyed by tenant, so a tenant's events
    # stay in order.
    rt.add_consumer(
        [*topics, AutomationRun.topic, AutomationResult.topic],
        counted.handler(packets.handle, recorded_by_handler=packets.records),
        group_id=f"{settings.effective_consumer_group}-packets",
        lanes=settings.consumer_lanes,
    )
    app.include_router(make_router(settings, packets, kb))
    app.include_router(counts_router(settings, counted))
    return PacketService(rt, app, packets, kb)
