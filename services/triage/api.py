"""The triage service's HTTP routes for signals: one signal as it is now, a tenant's signals,
and the alert-template links the clustering has learned. Ticket triage's routes are in
`tickets/api.py`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from sqlalchemy import Engine

from libs.common.access import tenant_reader
from libs.common.openapi import errors
from libs.common.service import TenantQuery
from services.triage.alerts import store
from services.triage.alerts.clusterer import Signal, signal_payload
from services.triage.alerts.engine import AlertClustering
from services.triage.settings import TriageSettings


def make_router(settings: TriageSettings, engine: Engine, clustering: AlertClustering) -> APIRouter:
    router = APIRouter()
    reader = tenant_reader(settings)

    @router.get("/v1/signals/{signal_id}", tags=["signals"], dependencies=[reader], responses=errors(404))
    async def get_signal(
        signal_id: Annotated[str, PathParam(pattern=r"^[0-9a-f-]{36}$")], tenant_id: TenantQuery
    ) -> dict[str, Any]:
        """A signal as it is now, in the form of its revisions on `signals.clustered.v1`
        (title, severity, devices, sites, times in ISO 8601, confidence, reasons, its recent
        alerts with their own text and link), plus its `status`."""
        live = clustering.snapshot(tenant_id).get(signal_id)
        found = live or await asyncio.to_thread(store.get_signal, engine, tenant_id, signal_id)
        if found is None:
            raise HTTPException(404, f"no signal {signal_id} for tenant {tenant_id}")
        return signal_view(found)

    @router.get("/v1/signals", tags=["signals"], dependencies=[reader])
    async def list_signals(
        tenant_id: TenantQuery,
        status: Annotated[str | None, Query(pattern=r"^(open|resolved|merged|closed)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """A tenant's signals, latest first: those held in memory as they are now, the others
        as last checkpointed."""
        stored = await asyncio.to_thread(store.list_signals, engine, tenant_id, status, limit)
        live = clustering.snapshot(tenant_id)
        out = [live.pop(s["signal_id"], s) for s in stored]
        out += [s for s in live.values() if status is None or s["status"] == status]
        out.sort(key=lambda s: -s["last_seen"])
        return {"tenant_id": tenant_id, "signals": [signal_view(s) for s in out[:limit]]}

    @router.get("/v1/correlations", tags=["signals"], dependencies=[reader])
    async def correlations(
        tenant_id: TenantQuery, limit: Annotated[int, Query(ge=1, le=500)] = 20
    ) -> dict[str, Any]:
        """The strongest alert-template links learned for a tenant (lift and support)."""
        return {"tenant_id": tenant_id, "links": clustering.learned_links(tenant_id, limit)}

    return router


_STATE_OF = {"resolved": "resolved", "merged": "merged"}


def signal_view(state: dict[str, Any]) -> dict[str, Any]:
    """The public form of a signal held by the clusterer (in memory or checkpointed): what its
    latest revision says, not the clusterer's working state."""
    sig = Signal.from_state({k: v for k, v in state.items() if k != "stored_status"})
    name = _STATE_OF.get(sig.status, "opened" if sig.revision <= 1 else "updated")
    doc = signal_payload(sig, name, []).model_dump(mode="json")
    doc["status"] = sig.status
    return doc
