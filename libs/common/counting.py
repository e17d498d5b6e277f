"""The consume-count-audit shell for services whose decision logic has not landed yet.

Such a service takes in its topics for real (inbox row per event, idempotent), counts them per
tenant and audits what it received. It decides nothing, and its docs say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query
from sqlalchemy import MetaData

from libs.common import inbox
from libs.common.events import Envelope
from libs.common.service import Runtime, operator_only
from libs.common.settings import ServiceSettings


def build_counting_service(
    settings: ServiceSettings, *, topics: Sequence[str], migrations_dir: Path, title: str, description: str
) -> tuple[Runtime, FastAPI]:
    service = settings.service_name
    table = inbox.inbox_table(MetaData(), service)
    rt = Runtime(settings, migrations_dir=migrations_dir)

    async def handle(event: Envelope, _record: Any) -> None:
        await asyncio.to_thread(inbox.record, rt.engine, table, event)
        # Audited on every delivery: the audit id is derived from the event id, so a
        # redelivery (say after a crash between the two writes) is recorded once.
        await rt.audit.emit(
            tenant_id=event.tenant_id,
            action=f"{service}.event.received",
            subject_kind=event.type,
            subject_id=str(event.event_id),
            cause_id=str(event.event_id),
            details={"topic": event.topic},
        )

    rt.add_consumer(list(topics), handle)
    app = rt.make_app(title, description)

    @app.get("/v1/counts", tags=[service], dependencies=[operator_only(settings)])
    async def counts(
        tenant_id: Annotated[str, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")],
    ) -> dict[str, Any]:
        """Events this service has taken in for one tenant, by topic."""
        return {
            "tenant_id": tenant_id,
            "by_topic": await asyncio.to_thread(inbox.counts, rt.engine, table, tenant_id),
        }

    return rt, app
