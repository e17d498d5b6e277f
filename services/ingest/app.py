"""Wiring of the ingest service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from libs.common.bus import AtomicPublisher
from libs.common.service import BodyLimit, Runtime, operator_only
from services.ingest import admin, api
from services.ingest.pipeline import IngestPipeline
from services.ingest.ratelimit import SharedRateLimiter
from services.ingest.settings import IngestSettings
from services.ingest.tenants import KeyVerifier


def build(settings: IngestSettings) -> tuple[Runtime, FastAPI]:
    rt = Runtime(settings, migrations_dir=Path(__file__).parent / "migrations")
    publisher = AtomicPublisher(
        settings.kafka_bootstrap_servers,
        client_id="msp-ingest",
        timeout_s=settings.publish_timeout_s,
        namespace=settings.topic_namespace,
    )
    rt.add_component("publisher", publisher.start, publisher.stop, lambda: publisher.started)
    pipeline = IngestPipeline(
        rt.engine,
        publisher,
        SharedRateLimiter(rt.engine, settings.rate_limit_eps, settings.rate_limit_burst),
        max_events=settings.max_events_per_request,
    )
    pepper = settings.effective_signing_pepper()
    app = rt.make_app(
        "msp ingest", "Takes RMM alerts and PSA ticket events in, per tenant, onto Kafka.", body_limit=True
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    verifier = KeyVerifier(rt.engine, settings.key_cache_s)
    app.include_router(api.make_router(pipeline, verifier, pepper))
    app.include_router(admin.make_router(rt.engine, operator_only(settings), pepper, verifier))
    return rt, app
