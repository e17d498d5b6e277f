"""The audit consumer: `audit.events.v1` into the append-only trail.

The audit service emits no audit events of its own for what it records: it is the trail.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Engine

from libs.common.events import AuditEvent
from services.audit import store


def make_handler(engine: Engine):  # type: ignore[no-untyped-def]
    async def handle(event: AuditEvent, _record: Any) -> None:
        await asyncio.to_thread(store.append, engine, event)

    return handle
