"""Wiring of the triage service.

Alerts (`alerts.raw.v1`) are clustered into signals (`signals.clustered.v1`) per tenant: see
`services/triage/alerts/`. Ticket events (`tickets.events.v1`) are triaged into
`tickets.triaged.v1` (category, intent, priority, client context, similar cases), reading open
signals from `signals.clustered.v1`: see `services/triage/tickets/`. What the ticket consumer
took in is counted per tenant and topic (`/v1/counts`).
"""

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from libs.common.embeddings import shared_embedder
from libs.common.events import AlertReceived, TicketEvent
from libs.common.inbox import Counted
from libs.common.reasoning import reasoning_from_settings
from libs.common.service import Runtime, counts_router
from libs.common.settings import SettingsError
from services.triage import tables
from services.triage.alerts.engine import AlertClustering
from services.triage.api import make_router
from services.triage.settings import TriageSettings
from services.triage.tickets.api import make_router as tickets_router
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
    counted = Counted(rt.engine, tables.inbox)
    app.include_router(counts_router(settings, counted))
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

    app.include_router(make_router(settings, rt.engine, clustering))
    return TriageService(rt, app, clustering, tickets)


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
        reasoning=reasoning_from_settings(settings, engine=rt.engine),
        global_corpus=corpus,
        namespace=settings.topic_namespace,
    )
    rt.add_component("ticket_triage", triage.start, triage.stop, lambda: triage.ready)
    # Ticket events only: what tickets see of the signals, alert clustering writes at each
    # checkpoint into the same database (`alerts/store.py`), so no signal revision is decoded here.
    rt.add_consumer(
        [TicketEvent.topic],
        batch_handler=counted.batch_handler(triage.handle_batch) if counted else triage.handle_batch,
        on_revoke=triage.on_revoke,
        group_id=f"{settings.effective_consumer_group}-tickets",
    )
    app.include_router(tickets_router(settings, rt.engine, triage))
    return triage
