"""Ingest's HTTP API: senders post alerts and ticket events, in the platform's canonical JSON or
in their own tool's webhook format, authenticated per tenant.

Answers: 202 with the event ids once Kafka committed every event of the request; 400 malformed
JSON; 401 bad or missing credentials; 403 a key used for another tenant; 413 a body or batch
over the limit; 422 schema violations, naming each field; 429 the tenant's rate limit, with
Retry-After; 503 Kafka could not take the request (nothing of it was published), with
Retry-After.
"""
# No `from __future__ import annotations`: FastAPI must see the dependency aliases defined in
# make_router as objects, not strings.

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, APIKeyQuery
from pydantic import BaseModel, Field, ValidationError

from libs.common.events import Envelope
from libs.common.jsontypes import RequestBody
from libs.common.openapi import errors
from services.ingest.adapters import alertmanager, autotask, connectwise, datto, halopsa, ninjaone, pagerduty
from services.ingest.adapters.canonical import CanonicalAlert, CanonicalTicketEvent, alert_event, ticket_event
from services.ingest.adapters.common import TicketObservation
from services.ingest.pipeline import RETRY_AFTER_UNAVAILABLE_S, IngestPipeline, Unavailable
from services.ingest.tenants import KeyVerifier, Principal, signing_secret, verify_hmac_sha1

KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The tenant's sender key")
KEY_QUERY = APIKeyQuery(name="api_key", auto_error=False, description="For tools that cannot send headers")


class AcceptedBody(BaseModel):
    event_ids: list[str]


class AlertBatch(RequestBody):
    alerts: list[CanonicalAlert] = Field(min_length=1)


class TicketEventBatch(RequestBody):
    events: list[CanonicalTicketEvent] = Field(min_length=1)


def _presented_key(request: Request, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("api_key")


def unauthorized() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, "missing or invalid API key", headers={"WWW-Authenticate": "ApiKey"}
    )


def validation_errors(
    exc: ValidationError, prefix: tuple[str | int, ...] = ("body",)
) -> RequestValidationError:
    """A source payload that fails its model: the same 422 shape FastAPI gives, field by field."""
    return RequestValidationError(
        [{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
    )


def mapped(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a source adapter; a payload that passes the source's model but cannot make a valid
    event (a blank fingerprint, say) is the sender's error: 422, field by field."""
    try:
        return fn(*args)
    except ValidationError as exc:
        raise validation_errors(exc) from None
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("body",), "msg": str(exc), "type": "value_error"}]) from None


def make_router(pipeline: IngestPipeline, verifier: KeyVerifier, pepper: str) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["ingest"])
    responses: dict[int | str, dict[str, Any]] = {
        **errors(401, 403, 429),
        503: {"description": "Kafka could not take the events; nothing was published (see Retry-After)"},
    }

    async def caller(
        request: Request,
        x_api_key: Annotated[str | None, Header(description="The tenant's sender key")] = None,
        api_key: Annotated[
            str | None, Query(description="Alternative to the header, for tools without headers")
        ] = None,
    ) -> Principal:
        found = await verifier.averify(_presented_key(request, x_api_key))
        if found is None:
            raise unauthorized()
        return found

    Caller = Annotated[Principal, Depends(caller)]

    def tenant_of(who: Principal, claimed: str | None) -> None:
        # The key decides the tenant; a body naming another tenant is refused, never followed.
        if claimed is not None and claimed != who.tenant_id:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this key may not publish for that tenant")

    async def accept(
        who: Principal, source: str, items: list[Envelope | TicketObservation], refs: set[str] | None = None
    ) -> JSONResponse:
        try:
            result = await pipeline.accept(who, source, items, refs=refs)
        except Unavailable:
            return JSONResponse(
                {"detail": "the event bus could not take the request; nothing was published, retry later"},
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": RETRY_AFTER_UNAVAILABLE_S},
            )
        return JSONResponse({"event_ids": result.event_ids}, status_code=status.HTTP_202_ACCEPTED)

    common: dict[str, Any] = {"status_code": 202, "response_model": AcceptedBody, "responses": responses}

    # --- canonical ------------------------------------------------------------------------

    @router.post("/alerts", **common)
    async def post_alert(body: CanonicalAlert, who: Caller) -> JSONResponse:
        """One alert in the platform's canonical form."""
        tenant_of(who, body.tenant_id)
        return await accept(who, "canonical", [mapped(alert_event, who.tenant_id, body)])

    @router.post("/alerts/batch", **common)
    async def post_alerts(body: AlertBatch, who: Caller) -> JSONResponse:
        """Many alerts at once: all are published, or none."""
        for a in body.alerts:
            tenant_of(who, a.tenant_id)
        return await accept(who, "canonical", [mapped(alert_event, who.tenant_id, a) for a in body.alerts])

    @router.post("/tickets/events", **common)
    async def post_ticket_event(body: CanonicalTicketEvent, who: Caller) -> JSONResponse:
        """One ticket event in the platform's canonical form."""
        tenant_of(who, body.tenant_id)
        return await accept(who, "canonical", [mapped(ticket_event, who.tenant_id, body)])

    @router.post("/tickets/events/batch", **common)
    async def post_ticket_events(body: TicketEventBatch, who: Caller) -> JSONResponse:
        """Many ticket events at once: all are published, or none."""
        for e in body.events:
            tenant_of(who, e.tenant_id)
        return await accept(who, "canonical", [mapped(ticket_event, who.tenant_id, e) for e in body.events])

    # --- monitoring tools -----------------------------------------------------------------

    @router.post("/sources/alertmanager", **common)
    async def from_alertmanager(body: alertmanager.AlertmanagerWebhook, who: Caller) -> JSONResponse:
        """Prometheus Alertmanager webhook receiver (payload version 4)."""
        return await accept(
            who,
            alertmanager.SYSTEM,
            mapped(alertmanager.to_events, body, who.tenant_id),
            alertmanager.tenant_refs(body),
        )

    @router.post("/sources/pagerduty", **common)
    async def from_pagerduty(
        request: Request,
        body: pagerduty.PagerDutyEvent,
        x_api_key: Annotated[str | None, Header()] = None,
        api_key: Annotated[str | None, Query()] = None,
    ) -> JSONResponse:
        """PagerDuty Events API v2 event; the `routing_key` may carry the sender key."""
        who = await verifier.averify(_presented_key(request, x_api_key) or body.routing_key)
        if who is None:
            raise unauthorized()
        return await accept(who, pagerduty.SYSTEM, mapped(pagerduty.to_events, body, who.tenant_id))

    @router.post("/sources/datto", **common)
    async def from_datto(body: datto.DattoAlert, who: Caller) -> JSONResponse:
        """Datto RMM alert webhook."""
        return await accept(
            who, datto.SYSTEM, mapped(datto.to_events, body, who.tenant_id), datto.tenant_refs(body)
        )

    @router.post("/sources/ninjaone", **common)
    async def from_ninjaone(body: ninjaone.NinjaActivity, who: Caller) -> JSONResponse:
        """NinjaOne activity webhook."""
        return await accept(
            who, ninjaone.SYSTEM, mapped(ninjaone.to_events, body, who.tenant_id), ninjaone.tenant_refs(body)
        )

    # --- PSAs -----------------------------------------------------------------------------

    @router.post("/sources/connectwise", **common)
    async def from_connectwise(body: connectwise.ConnectWiseCallback, who: Caller) -> JSONResponse:
        """ConnectWise PSA callback (tickets and ticket notes)."""
        try:
            observations = connectwise.to_observations(body)
        except ValidationError as exc:
            raise validation_errors(exc, ("body", "Entity")) from None
        except ValueError as exc:
            raise RequestValidationError(
                [{"loc": ("body", "Entity"), "msg": str(exc), "type": "value_error"}]
            ) from None
        return await accept(who, connectwise.SYSTEM, list(observations))

    @router.post("/sources/autotask", **common)
    async def from_autotask(
        request: Request,
        body: autotask.AutotaskWebhook,
        key_id: Annotated[
            str | None, Query(description="The key whose signing secret signs the posts")
        ] = None,
        x_hook_signature: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
        api_key: Annotated[str | None, Query()] = None,
    ) -> JSONResponse:
        """Autotask ticket and ticket-note webhook, signed with HMAC-SHA1 (`X-Hook-Signature`).

        Autotask is a signed source: every post must carry a signature made with the signing
        secret of the key named by `key_id` (or by a full key). A full key alone is not enough:
        a request without a valid signature is refused, whatever else it carries."""
        presented = _presented_key(request, x_api_key)
        if not x_hook_signature:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "Autotask posts must be signed: X-Hook-Signature (HMAC-SHA1 of the body with the key's "
                "signing secret) is missing",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        who = await verifier.averify(presented) if presented else None
        kid = key_id or (who.key_id if who is not None else None)
        if who is None and kid:
            who = await asyncio.to_thread(verifier.by_key_id, kid)
        if who is None or (key_id and who.key_id != key_id):
            raise unauthorized()
        raw = await request.body()
        if not verify_hmac_sha1(signing_secret(pepper, who.key_id), raw, x_hook_signature):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "X-Hook-Signature does not match the body")
        return await accept(who, autotask.SYSTEM, mapped(autotask.to_observations, body))

    @router.post("/sources/halopsa", **common)
    async def from_halopsa(
        who: Caller,
        body: Annotated[
            halopsa.Delivery,
            Body(
                description="A ticket or action object, a list of them, or {tickets: [...], actions: [...]}"
            ),
        ],
    ) -> JSONResponse:
        """HaloPSA webhook (tickets and actions, batched)."""
        doc = halopsa.as_webhook(body)
        return await accept(who, halopsa.SYSTEM, mapped(halopsa.to_observations, doc))

    return router
