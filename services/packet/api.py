"""HTTP API of the packet service: packets (JSON, every version, and a readable page),
engineers' feedback, the knowledge base and each tenant's PSA target. Operator token
required; the tenant is always a parameter, and a packet is only found within its tenant."""

from __future__ import annotations

import asyncio
import html
import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from libs.common.events import EscalationPacketPayload
from libs.common.service import operator_only
from libs.common.settings import ServiceSettings
from services.packet import engine as packet_engine
from services.packet import psa, store
from services.packet.engine import PacketEngine
from services.packet.kb.base import KnowledgeBase

TENANT = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TenantQuery = Annotated[str, Query(pattern=TENANT)]
PacketId = Annotated[str, PathParam(pattern=r"^[0-9a-f-]{36}$")]


class FeedbackIn(BaseModel):
    tenant_id: str = Field(pattern=TENANT)
    version: int = Field(ge=1)
    claim: str | None = Field(
        default=None, pattern=r"^(summary|related_alerts|runbook|already_tried|similar_cases)/\d{1,3}$"
    )
    verdict: Literal["useful", "wrong"] | None = None
    review_seconds: float | None = Field(default=None, ge=0, le=86400)
    engineer: str | None = Field(default=None, max_length=200)


class RunbookIn(BaseModel):
    tenant_id: str | None = Field(default=None, pattern=TENANT)  # None: the global library
    path: str = Field(min_length=1, max_length=500)
    markdown: str = Field(min_length=1, max_length=1_000_000)
    url: str | None = Field(default=None, max_length=2000)


class TargetIn(BaseModel):
    tenant_id: str = Field(pattern=TENANT)
    kind: Literal["connectwise", "autotask", "halopsa", "webhook"]
    base_url: str = Field(pattern=r"^https?://", max_length=2000)
    credentials: dict[str, str] = Field(default_factory=dict)
    options: dict[str, str | int | bool] = Field(default_factory=dict)


REQUIRED_CREDENTIALS = {
    "connectwise": ("company", "public_key", "private_key", "client_id"),
    "autotask": ("integration_code", "username", "secret"),
    "halopsa": ("token",),
    "webhook": (),
}


def add_routes(app: FastAPI, settings: ServiceSettings, packets: PacketEngine, kb: KnowledgeBase) -> None:
    guard = [operator_only(settings)]
    engine = packets.engine

    async def versions_of(tenant_id: str, packet_id: str) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(store.packet_versions, engine, tenant_id, packet_id)
        if not rows:
            raise HTTPException(404, f"no packet {packet_id} for tenant {tenant_id}")
        return rows

    @app.get("/v1/packets", tags=["packets"], dependencies=guard)
    async def packet_of_ticket(
        tenant_id: TenantQuery, ticket_id: Annotated[str, Query(min_length=1, max_length=1000)]
    ) -> dict[str, Any]:
        """The packet of a ticket, latest version."""
        row = await asyncio.to_thread(store.latest_packet, engine, tenant_id, ticket_id)
        if row is None:
            raise HTTPException(404, f"no packet for ticket {ticket_id} of tenant {tenant_id}")
        return {
            "packet_id": row["packet_id"],
            "version": row["version"],
            "packet": json.loads(row["payload"]),
        }

    @app.get("/v1/packets/{packet_id}", tags=["packets"], dependencies=guard)
    async def get_packet(packet_id: PacketId, tenant_id: TenantQuery) -> dict[str, Any]:
        """Every version of a packet, with its PSA delivery and the feedback on it."""
        rows = await versions_of(tenant_id, packet_id)
        return {
            "packet_id": packet_id,
            "ticket_id": rows[0]["ticket_id"],
            "versions": [
                {
                    "version": r["version"],
                    "created_at": r["created_at"],
                    "packet": json.loads(r["payload"]),
                    "delivery": None
                    if r["status"] is None
                    else {
                        "status": r["status"],
                        "attempts": r["attempts"],
                        "posted_at": r["posted_at"],
                        "last_error": r["last_error"],
                    },
                }
                for r in rows
            ],
            "feedback": await asyncio.to_thread(store.feedback_of, engine, tenant_id, packet_id),
        }

    @app.get(
        "/v1/packets/{packet_id}/page", tags=["packets"], dependencies=guard, response_class=HTMLResponse
    )
    async def packet_page(packet_id: PacketId, tenant_id: TenantQuery) -> HTMLResponse:
        """The latest version as a page: claims with their confidence and sources."""
        rows = await versions_of(tenant_id, packet_id)
        packet = EscalationPacketPayload.model_validate_json(rows[-1]["payload"])
        e = html.escape
        body = psa.render_html(packet)
        older = ", ".join(f"v{r['version']}" for r in rows[:-1]) or "none"
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>Packet {e(packet.ticket_id)} v{packet.version}</title>"
            "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;line-height:1.45}"
            "i{color:#555}li{margin:.3rem 0}</style></head><body>"
            f"<h1>Ticket {e(packet.ticket_id)}</h1><p>Tenant {e(tenant_id)}; earlier versions: {e(older)}</p>"
            f"{body}</body></html>"
        )
        return HTMLResponse(page)

    @app.post("/v1/packets/{packet_id}/feedback", tags=["packets"], dependencies=guard, status_code=201)
    async def post_feedback(packet_id: PacketId, body: FeedbackIn) -> dict[str, Any]:
        """An engineer marks a claim useful or wrong, and/or says how long the review took."""
        rows = await versions_of(body.tenant_id, packet_id)
        version = next((r for r in rows if r["version"] == body.version), None)
        if version is None:
            raise HTTPException(404, f"packet {packet_id} has no version {body.version}")
        if body.claim is not None:
            part, index = body.claim.split("/")
            if int(index) >= len(json.loads(version["payload"])[part]):
                raise HTTPException(422, f"version {body.version} has no claim {body.claim}")
        if body.verdict is None and body.review_seconds is None:
            raise HTTPException(422, "give a verdict, a review time, or both")
        row = {"feedback_id": str(uuid.uuid4()), "packet_id": packet_id, **body.model_dump()}
        await asyncio.to_thread(store.add_feedback, engine, row)
        if body.verdict:
            packet_engine.FEEDBACK.labels(body.verdict).inc()
        if body.review_seconds is not None:
            packet_engine.REVIEW.observe(body.review_seconds)
        return row

    @app.put("/v1/kb/runbooks", tags=["knowledge base"], dependencies=guard)
    async def put_runbook(body: RunbookIn) -> dict[str, Any]:
        """Add or replace a runbook of a tenant (or of the global library, without tenant)."""
        try:
            return await asyncio.to_thread(kb.put, body.tenant_id, body.path, body.markdown, body.url)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.delete("/v1/kb/runbooks", tags=["knowledge base"], dependencies=guard)
    async def delete_runbook(
        path: Annotated[str, Query(min_length=1, max_length=500)],
        tenant_id: Annotated[str | None, Query(pattern=TENANT)] = None,
    ) -> dict[str, Any]:
        if not await asyncio.to_thread(kb.remove, tenant_id, path):
            raise HTTPException(
                404, f"no runbook {path} in {'the global library' if tenant_id is None else tenant_id}"
            )
        return {"deleted": path}

    @app.get("/v1/kb/runbooks", tags=["knowledge base"], dependencies=guard)
    async def list_runbooks(tenant_id: Annotated[str | None, Query(pattern=TENANT)] = None) -> dict[str, Any]:
        scope = "global" if tenant_id is None else f"tenant:{tenant_id}"
        return {"scope": scope, "runbooks": await asyncio.to_thread(store.list_runbooks, engine, scope)}

    @app.get("/v1/kb/search", tags=["knowledge base"], dependencies=guard)
    async def search(
        tenant_id: TenantQuery, q: Annotated[str, Query(min_length=1, max_length=4000)]
    ) -> dict[str, Any]:
        """The runbook sections that fit a text best, from the tenant's runbooks and the global library."""
        hits = await asyncio.to_thread(kb.search, tenant_id, q, 5)
        return {
            "hits": [
                {
                    "scope": h.scope,
                    "path": h.path,
                    "title": h.title,
                    "section": h.section.heading,
                    "anchor": h.section.anchor,
                    "score": round(h.score, 4),
                }
                for h in hits
            ]
        }

    @app.put("/v1/psa", tags=["psa"], dependencies=guard)
    async def put_target(body: TargetIn) -> dict[str, Any]:
        """Where a tenant's packets are posted (one PSA per tenant)."""
        missing = [k for k in REQUIRED_CREDENTIALS[body.kind] if not body.credentials.get(k)]
        if missing:
            raise HTTPException(422, f"{body.kind} needs credentials: {', '.join(missing)}")
        await asyncio.to_thread(
            store.set_target, engine, body.tenant_id, body.kind, body.base_url, body.credentials, body.options
        )
        return {
            "tenant_id": body.tenant_id,
            "kind": body.kind,
            "base_url": body.base_url,
            "options": body.options,
        }

    @app.get("/v1/psa", tags=["psa"], dependencies=guard)
    async def get_target(tenant_id: TenantQuery) -> dict[str, Any]:
        found = await asyncio.to_thread(store.get_target, engine, tenant_id)
        if found is None:
            raise HTTPException(404, f"no PSA target for tenant {tenant_id}")
        return {
            "tenant_id": tenant_id,
            "kind": found["kind"],
            "base_url": found["base_url"],
            "options": found["options"],
        }
