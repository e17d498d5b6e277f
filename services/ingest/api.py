"""Ingest's HTTP API: senders post alerts and ticket events with their tenant key.

A post is answered 202 with the event ids only after Kafka acknowledged every event of it
(acks=all); if Kafka cannot take them the answer is 503 with Retry-After.
"""
# No `from __future__ import annotations` here: FastAPI must see the dependency aliases that
# are defined inside make_router as real objects, not as strings.

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from libs.common.audit import audit_event
from libs.common.bus import EventProducer, PublishError
from libs.common.events import Envelope
from services.ingest.canonical import CanonicalAlert, CanonicalTicketEvent, alert_event, ticket_event
from services.ingest.tenants import KeyVerifier, Principal

log = logging.getLogger(__name__)

RETRY_AFTER_S = "5"


class Accepted(BaseModel):
    event_ids: list[str]


def make_router(producer: EventProducer, verifier: KeyVerifier) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["ingest"])

    async def principal(x_api_key: Annotated[str | None, Header()] = None) -> Principal:
        found = await asyncio.to_thread(verifier.verify, x_api_key)
        if found is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or invalid X-API-Key",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        return found

    Caller = Annotated[Principal, Depends(principal)]

    def tenant_of(caller: Principal, claimed: str | None) -> str:
        # The key decides the tenant; a body naming another tenant is refused, never followed.
        if claimed is not None and claimed != caller.tenant_id:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this key may not publish for that tenant")
        return caller.tenant_id

    async def publish(events: list[Envelope], action: str, caller: Principal) -> JSONResponse:
        audits = [
            audit_event(
                service="ingest",
                tenant_id=e.tenant_id,
                action=action,
                subject_kind=e.type,
                subject_id=str(e.event_id),
                cause_id=str(e.event_id),
                actor=f"key:{caller.key_id}",
                details={"source": e.source.system},
            )
            for e in events
        ]
        try:
            await producer.publish_many([*events, *audits])
        except PublishError as exc:
            log.error("kafka did not take the request", extra={"error": str(exc)})
            return JSONResponse(
                {"detail": "the event bus is unavailable; retry later"},
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": RETRY_AFTER_S},
            )
        return JSONResponse(
            Accepted(event_ids=[str(e.event_id) for e in events]).model_dump(),
            status_code=status.HTTP_202_ACCEPTED,
        )

    @router.post("/alerts", status_code=202, response_model=Accepted)
    async def post_alert(body: CanonicalAlert, caller: Caller) -> JSONResponse:
        """Accept one alert in the platform's canonical form."""
        return await publish(
            [alert_event(tenant_of(caller, body.tenant_id), body)], "ingest.alert.accepted", caller
        )

    @router.post("/tickets/events", status_code=202, response_model=Accepted)
    async def post_ticket_event(body: CanonicalTicketEvent, caller: Caller) -> JSONResponse:
        """Accept one ticket event in the platform's canonical form."""
        return await publish(
            [ticket_event(tenant_of(caller, body.tenant_id), body)], "ingest.ticket_event.accepted", caller
        )

    return router
