"""Wiring of the triage service.

Alerts (`alerts.raw.v1`) are clustered into signals (`signals.clustered.v1`) per tenant: see
`services/triage/alerts/`. Ticket events (`tickets.events.v1`) are triaged into
`tickets.triaged.v1` (category, intent, priority, client context, similar cases), reading open
signals from `signals.clustered.v1`: see `services/triage/tickets/`. What the ticket consumer
took in is counted per tenant and topic (`/v1/counts`).
"""

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi import Path as PathParam

from libs.common.access import tenant_reader
from libs.common.embeddings import shared_embedder
from libs.common.events import AlertReceived, SignalClustered, TicketEvent
from libs.common.inbox import Counted
from libs.common.openapi import errors
from libs.common.reasoning import reasoning_from_settings
from libs.common.service import Runtime, TenantQuery, add_counts_route
from libs.common.settings import SettingsError
from services.triage.alerts import store
from services.triage.alerts.clusterer import Signal, signal_payload
from services.triage.alerts.engine import AlertClustering
from services.triage.settings import TriageSettings
from services.triage.tickets.api import add_ticket_routes
from services.triage.tickets.corpus import read_labelled
from services.triage.tickets.engine import TicketTriage


@dataclass(frozen=True)
class TriageService:
    """The wired service: its runtime and app, alert clustering, and ticket triage when on."""

    rt: Runtime
    app: FastAPI
    clustering: AlertClustering
    tickets: TicketTriage | None


def build(settings: TriageSettings) -> tuple[Runtime, FastAPI]:
    service = assemble(settings)
    return service.rt, service.app


def assemble(settings: TriageSettings) -> TriageService:
    rt = Runtime(settings, migrations_dir=Path(__file__).parent / "migrations")
    app = rt.make_app("msp triage", __doc__ or "")
    counted = Counted(rt.engine, "triage")
    add_counts_route(app, settings, counted)
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
    tickets = None
    if settings.embeddings_enabled and settings.tickets_enabled:
        tickets = add_ticket_triage(rt, app, settings, counted)

    reader = tenant_reader(settings)

    @app.get("/v1/signals/{signal_id}", tags=["signals"], dependencies=[reader], responses=errors(404))
    async def get_signal(
        signal_id: Annotated[str, PathParam(pattern=r"^[0-9a-f-]{36}$")], tenant_id: TenantQuery
    ) -> dict[str, Any]:
        """A signal as it is now, in the form of its revisions on `signals.clustered.v1`
        (title, severity, devices, sites, times in ISO 8601, confidence, reasons, its recent
        alerts with their own text and link), plus its `status`."""
        live = clustering.snapshot(tenant_id).get(signal_id)
        found = live or await asyncio.to_thread(store.get_signal, rt.engine, tenant_id, signal_id)
        if found is None:
            raise HTTPException(404, f"no signal {signal_id} for tenant {tenant_id}")
        return signal_view(found)

    @app.get("/v1/signals", tags=["signals"], dependencies=[reader])
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
        return {"tenant_id": tenant_id, "signals": [signal_view(s) for s in out[:limit]]}

    @app.get("/v1/correlations", tags=["signals"], dependencies=[reader])
    async def correlations(
        tenant_id: TenantQuery, limit: Annotated[int, Query(ge=1, le=500)] = 20
    ) -> dict[str, Any]:
        """The strongest alert-template links learned for a tenant (lift and support)."""
        return {"tenant_id": tenant_id, "links": clustering.learned_links(tenant_id, limit)}

    return TriageService(rt, app, clustering, tickets)


_STATE_OF = {"resolved": "resolved", "merged": "merged"}


def signal_view(state: dict[str, Any]) -> dict[str, Any]:
    """The public form of a signal held by the clusterer (in memory or checkpointed): what its
    latest revision says, not the clusterer's working state."""
    sig = Signal.from_state({k: v for k, v in state.items() if k != "stored_status"})
    name = _STATE_OF.get(sig.status, "opened" if sig.revision <= 1 else "updated")
    doc = signal_payload(sig, name, []).model_dump(mode="json")
    doc["status"] = sig.status
    return doc


def add_ticket_triage(
    rt: Runtime, app: FastAPI, settings: TriageSettings, counted: Counted | None = None
) -> TicketTriage:
    corpus = None
    if settings.tickets_global_corpus is not None:
        try:
            _, texts, labels = read_labelled(
                settings.tickets_global_corpus,
                settings.tickets_global_text_col,
                settings.tickets_global_label_col,
            )
        except ValueError as exc:
            raise SettingsError(f"MSP_TICKETS_GLOBAL_CORPUS: {exc}") from None
        corpus = (texts, labels)
    triage = TicketTriage(
        engine=rt.engine,
        producer=rt.producer,
        audit=rt.audit,
        embedder=shared_embedder(),
        config=settings.triage_config(),
        default_mode=settings.tickets_default_mode,
        auto_threshold=settings.tickets_auto_threshold,
        reasoning=reasoning_from_settings(settings, engine=rt.engine),
        global_corpus=corpus,
        namespace=settings.topic_namespace,
    )
    rt.add_component("ticket_triage", triage.start, triage.stop, lambda: triage.ready)
    # Signals and tickets in one group: both keyed by tenant, handled in order per partition.
    rt.add_consumer(
        [TicketEvent.topic, SignalClustered.topic],
        batch_handler=counted.batch_handler(triage.handle_batch) if counted else triage.handle_batch,
        on_revoke=triage.on_revoke,
        group_id=f"{settings.effective_consumer_group}-tickets",
    )
    add_ticket_routes(app, settings, rt.engine, triage)
    return triage
