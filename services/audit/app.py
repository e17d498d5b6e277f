"""Wiring of the audit service: one place that builds the runtime, the consumer and the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from libs.common.events import AuditEvent
from libs.common.service import Runtime, operator_only
from services.audit.anchor import Anchoring
from services.audit.api import make_router
from services.audit.settings import AuditSettings
from services.audit.stream import make_handler


def build(settings: AuditSettings) -> tuple[Runtime, FastAPI]:
    rt = Runtime(settings, migrations_dir=Path(__file__).parent / "migrations")
    rt.add_consumer([AuditEvent.topic], make_handler(rt.engine))
    anchoring = Anchoring(
        rt.engine,
        rt.producer,
        settings.effective_anchor_key(),
        settings.kafka_bootstrap_servers,
        namespace=settings.topic_namespace,
        every_s=settings.audit_checkpoint_every_s,
    )
    rt.add_component("anchoring", anchoring.start, anchoring.stop, lambda: anchoring.running)
    app = rt.make_app("msp audit", "Append-only, tamper-evident audit trail of the platform.")
    app.include_router(make_router(rt.engine, operator_only(settings), anchoring))
    return rt, app
