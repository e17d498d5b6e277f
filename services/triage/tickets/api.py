"""HTTP API of ticket triage: a ticket's triage result, a tenant's rollout modes and intents,
its case memory and the drift of its classifications. A ticket's triage result is read with the
operator token, an engineer-side key of the tenant or a signed link; the rest takes the
operator token. The tenant is always a required parameter."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import Field
from sqlalchemy import Engine, select

from libs.common.access import tenant_reader
from libs.common.events import TENANT_PATTERN, RolloutMode
from libs.common.jsontypes import Float, RequestBody
from libs.common.openapi import errors
from libs.common.service import TenantQuery, operator_only
from libs.common.settings import ServiceSettings
from services.triage.tickets import store
from services.triage.tickets.engine import TicketTriage
from services.triage.tickets.intents import CATALOGUE
from services.triage.tickets.triager import TriageConfig


class RolloutIn(RequestBody):
    tenant_id: str = Field(pattern=TENANT_PATTERN)
    category: str = Field(default="*", min_length=1, max_length=200)  # "*": the tenant's default
    mode: RolloutMode
    auto_threshold: Float = Field(default=TriageConfig.auto_threshold, ge=0.0, le=1.0)


class IntentIn(RequestBody):
    tenant_id: str = Field(pattern=TENANT_PATTERN)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]{0,99}$")
    description: str = Field(min_length=1, max_length=500)
    category: str = Field(min_length=1, max_length=200)
    keywords: list[Annotated[str, Field(min_length=2, max_length=100)]] = Field(
        default_factory=list, max_length=50
    )
    examples: list[Annotated[str, Field(min_length=3, max_length=500)]] = Field(min_length=2, max_length=50)


def drift(engine: Engine, tenant_id: str, window: int) -> dict[str, Any]:
    t = store.tickets
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.confidence, t.c.label, t.c.final_category, t.c.corrected)
            .where(t.c.tenant_id == tenant_id)
            .order_by(t.c.decided_at.desc())
            .limit(window)
        ).all()
    reviewed = [r for r in rows if r.final_category is not None and r.label is not None]
    return {
        "tenant_id": tenant_id,
        "window": len(rows),
        "mean_confidence": round(sum(r.confidence for r in rows) / len(rows), 4) if rows else None,
        "abstained": sum(1 for r in rows if r.label is None),
        "reviewed": len(reviewed),
        "corrected": sum(1 for r in reviewed if r.corrected),
        "correction_share": round(sum(1 for r in reviewed if r.corrected) / len(reviewed), 4)
        if reviewed
        else None,
    }


def make_router(settings: ServiceSettings, engine: Engine, triage: TicketTriage) -> APIRouter:
    router = APIRouter()
    guard = [operator_only(settings)]

    @router.get(
        "/v1/tickets/{ticket_id}/triage",
        tags=["tickets"],
        dependencies=[tenant_reader(settings)],
        responses=errors(404),
    )
    async def ticket_triage(ticket_id: str, tenant_id: TenantQuery) -> dict[str, Any]:
        """The latest triage result of a ticket (shadow results included: this is the record)."""
        row = await asyncio.to_thread(store.last_decision, engine, tenant_id, ticket_id)
        if row is None:
            raise HTTPException(404, f"no triage of ticket {ticket_id} for tenant {tenant_id}")
        return {
            "result": json.loads(row["result"]),
            "final_category": row["final_category"],
            "corrected": row["corrected"],
        }

    @router.get("/v1/tickets/drift", tags=["tickets"], dependencies=guard)
    async def ticket_drift(
        tenant_id: TenantQuery, window: Annotated[int, Query(ge=1, le=10000)] = 200
    ) -> dict[str, Any]:
        """Mean confidence and share of engineer corrections over the tenant's latest decisions."""
        return await asyncio.to_thread(drift, engine, tenant_id, window)

    @router.get("/v1/tickets/memory", tags=["tickets"], dependencies=guard)
    async def ticket_memory(tenant_id: TenantQuery) -> dict[str, Any]:
        """The tenant's case memory as this instance holds it, and which model decides."""
        return triage.status(tenant_id)

    @router.get("/v1/rollout", tags=["tickets"], dependencies=guard)
    async def get_rollout(tenant_id: TenantQuery) -> dict[str, Any]:
        modes = await asyncio.to_thread(store.rollout_modes, engine, tenant_id)
        return {
            "tenant_id": tenant_id,
            "default": {"mode": triage.config.default_mode, "auto_threshold": triage.config.auto_threshold},
            "modes": {c: {"mode": m, "auto_threshold": t} for c, (m, t) in modes.items()},
        }

    @router.put("/v1/rollout", tags=["tickets"], dependencies=guard)
    async def put_rollout(body: RolloutIn) -> dict[str, Any]:
        """Set the rollout mode of a tenant (category `*`) or of one of its categories."""
        await asyncio.to_thread(
            store.set_rollout, engine, body.tenant_id, body.category, body.mode, body.auto_threshold
        )
        await triage.audit.emit(
            tenant_id=body.tenant_id,
            action="triage.rollout.set",
            subject_kind="rollout",
            subject_id=body.category,
            cause_id=f"{body.category}:{body.mode}:{body.auto_threshold}",
            actor="operator",
            details=body.model_dump(),
        )
        return body.model_dump()

    @router.get("/v1/intents", tags=["tickets"], dependencies=guard)
    async def get_intents(tenant_id: TenantQuery) -> dict[str, Any]:
        """The shipped intent catalogue and the tenant's own intents (which override by name)."""
        own = await asyncio.to_thread(store.tenant_intents, engine, tenant_id)
        return {
            "tenant_id": tenant_id,
            "catalogue": [
                {"name": i.name, "description": i.description, "category": i.category} for i in CATALOGUE
            ],
            "tenant": own,
        }

    @router.put("/v1/intents", tags=["tickets"], dependencies=guard)
    async def put_intent(body: IntentIn) -> dict[str, Any]:
        """Add or replace one of the tenant's own intents; it counts from the next ticket on."""
        intent = body.model_dump(exclude={"tenant_id"})
        await asyncio.to_thread(store.save_intent, engine, body.tenant_id, intent)
        return body.model_dump()

    return router
