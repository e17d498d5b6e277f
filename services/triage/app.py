"""Wiring of the triage service.

Alerts (`alerts.raw.v1`) are clustered into signals (`signals.clustered.v1`) per tenant: see
`services/triage/alerts/`. Ticket events (`tickets.events.v1`) are still only taken in,
counted and audited: ticket classification lands with its own issue.
"""

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi import Path as PathParam

from libs.common.counting import build_counting_service
from libs.common.embeddings import shared_embedder
from libs.common.events import AlertReceived, TicketEvent
from libs.common.service import Runtime, operator_only
from services.triage.alerts import store
from services.triage.alerts.engine import AlertClustering
from services.triage.settings import TriageSettings

TenantQuery = Annotated[str, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


def build(settings: TriageSettings) -> tuple[Runtime, FastAPI]:
    rt, app = build_counting_service(
        settings,
        topics=[TicketEvent.topic],
        migrations_dir=Path(__file__).parent / "migrations",
        title="msp triage",
        description=__doc__ or "",
    )
    clustering = AlertClustering(
        engine=rt.engine,
        producer=rt.producer,
        config=settings.cluster_config(),
        embedder=shared_embedder() if settings.embeddings_enabled else None,
    )
    # Ready once the embedding model has loaded: loading it takes the CPU for ~10 s.
    rt.add_component("clustering", clustering.start, clustering.stop, lambda: clustering.embeddings_ready)
    rt.add_consumer(
        [AlertReceived.topic],
        batch_handler=clustering.handle_batch,
        on_revoke=clustering.forget_all,
        group_id=f"{settings.effective_consumer_group}-alerts",
        max_records=2000,
        # State is checkpointed, then offsets committed, about every five seconds (and on
        # rebalance and shutdown), not after every batch.
        checkpoint=clustering.checkpoint,
        commit_every_s=5.0,
    )
    rt.clustering = clustering  # type: ignore[attr-defined]

    @app.get("/v1/signals/{signal_id}", tags=["signals"], dependencies=[operator_only(settings)])
    async def get_signal(
        signal_id: Annotated[str, PathParam(pattern=r"^[0-9a-f-]{36}$")], tenant_id: TenantQuery
    ) -> dict[str, Any]:
        """A signal's stored state: its members, why they were grouped, its status."""
        found = await asyncio.to_thread(store.get_signal, rt.engine, tenant_id, signal_id)
        if found is None:
            raise HTTPException(404, f"no signal {signal_id} for tenant {tenant_id}")
        return found

    @app.get("/v1/signals", tags=["signals"], dependencies=[operator_only(settings)])
    async def list_signals(
        tenant_id: TenantQuery,
        status: Annotated[str | None, Query(pattern=r"^(open|resolved|merged|closed)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """A tenant's signals, latest first: those held in memory as they are now, the others
        as last checkpointed."""
        stored = await asyncio.to_thread(store.list_signals, rt.engine, tenant_id, status, limit)
        live = clustering.snapshot(tenant_id)
        out = [live.pop(s["signal_id"], s) for s in stored]
        out += [s for s in live.values() if status is None or s["status"] == status]
        out.sort(key=lambda s: -s["last_seen"])
        return {"tenant_id": tenant_id, "signals": out[:limit]}

    @app.get("/v1/correlations", tags=["signals"], dependencies=[operator_only(settings)])
    async def correlations(
        tenant_id: TenantQuery, limit: Annotated[int, Query(ge=1, le=500)] = 20
    ) -> dict[str, Any]:
        """The strongest alert-template links learned for a tenant (lift and support)."""
        return {"tenant_id": tenant_id, "links": clustering.learned_links(tenant_id, limit)}

    return rt, app
