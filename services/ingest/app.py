"""Wiring of the ingest service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from libs.common.service import Runtime
from services.ingest.api import make_router
from services.ingest.settings import IngestSettings
from services.ingest.tenants import KeyVerifier


def build(settings: IngestSettings) -> tuple[Runtime, FastAPI]:
    rt = Runtime(settings, migrations_dir=Path(__file__).parent / "migrations")
    app = rt.make_app("msp ingest", "Takes RMM alerts and PSA ticket events in, per tenant, onto Kafka.")
    app.include_router(make_router(rt.producer, KeyVerifier(rt.engine, settings.key_cache_s)))
    return rt, app
