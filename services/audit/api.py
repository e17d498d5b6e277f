"""The audit query and verify API: read-only, for operators; the tenant is a required argument."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import Engine

from libs.common.jsontypes import Timestamp
from libs.common.openapi import errors
from libs.common.service import TenantQuery
from services.audit import store
from services.audit.anchor import Anchoring, check_against


def make_router(engine: Engine, operator: Any, anchoring: Anchoring | None = None) -> APIRouter:
    router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[operator], responses=errors(401))

    @router.get("/events")
    async def events(
        tenant_id: TenantQuery,
        action: str | None = None,
        subject_id: str | None = None,
        trace_id: str | None = None,
        since: Timestamp | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(
            store.query,
            engine,
            tenant_id,
            action=action,
            subject_id=subject_id,
            trace_id=trace_id,
            since=since,
            limit=limit,
        )

    @router.get("/verify")
    async def verify(tenant_id: TenantQuery) -> dict[str, Any]:
        """The chain checked entry by entry, and against the latest signed checkpoint of its
        head anchored outside the database (`anchored`): a trail rewritten in the database,
        every hash recomputed, fails the second check."""
        result = await asyncio.to_thread(store.verify_tenant, engine, tenant_id)
        doc: dict[str, Any] = {"tenant_id": tenant_id, **result.__dict__, "anchored": None}
        if anchoring is not None:
            anchor = anchoring.latest.get(tenant_id)
            doc["anchored"] = anchoring.describe(tenant_id)
            if result.ok and anchor is not None:
                found = await asyncio.to_thread(store.hash_at, engine, tenant_id, anchor.tenant_seq)
                reason = check_against(anchor, found)
                if reason:
                    doc.update(ok=False, first_bad_seq=anchor.tenant_seq, reason=reason)
        return doc

    @router.get("/counts")
    async def counts(tenant_id: TenantQuery) -> dict[str, Any]:
        return {"tenant_id": tenant_id, "events": await asyncio.to_thread(store.count, engine, tenant_id)}

    return router
