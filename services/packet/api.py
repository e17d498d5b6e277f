"""HTTP API of the packet service: packets (a tenant's list, every version of one, and a
readable page), engineers' feedback, the knowledge base and each tenant's PSA target.

Reading packets and runbooks takes the operator token, an engineer-side key of the tenant or a
signed link (`libs/common/access.py`); changing the knowledge base or a PSA target takes the
operator token. The tenant is always a parameter, and a packet is only found within its tenant.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from pydantic import BeforeValidator, Field, field_validator

from libs.common import sla
from libs.common.access import Access, link_secret, sign_url, tenant_reader
from libs.common.events import TENANT_PATTERN, EscalationPacketPayload
from libs.common.jsontypes import RELATIVE_PATH, Bool, Int, RequestBody, json_number
from libs.common.openapi import errors
from libs.common.service import operator_only
from services.packet import builder, pages, psa
from services.packet import engine as packet_engine
from services.packet import reports as reports_draft
from services.packet.engine import Packets
from services.packet.kb.base import KnowledgeBase, scope_of
from services.packet.kb.markdown import parse
from services.packet.known import KnownTicket
from services.packet.settings import PacketSettings
from services.packet.store import feedback, lifecycle, projections, runbooks, targets, versions
from services.packet.store import reports as report_store

TENANT = TENANT_PATTERN
TenantQuery = Annotated[str, Query(pattern=TENANT)]


def _in_utc(at: datetime) -> datetime:
    """A time given without a zone is UTC; one whose UTC falls off the calendar (the first or
    last hours of years 1 and 9999) is the calendar's first or last instant."""
    try:
        return lifecycle.as_utc(at)
    except OverflowError:
        return (datetime.min if at.year == 1 else datetime.max).replace(tzinfo=UTC)


def _earlier(at: datetime, by: timedelta) -> datetime:
    try:
        return at - by
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


PacketId = Annotated[str, PathParam(pattern=r"^[0-9a-f-]{36}$")]


class FeedbackIn(RequestBody):
    tenant_id: str = Field(pattern=TENANT)
    version: Int = Field(ge=1)
    claim: str | None = Field(
        default=None, pattern=r"^(summary|related_alerts|runbook|already_tried|similar_cases)/\d{1,3}$"
    )
    verdict: Literal["useful", "wrong"] | None = None
    review_seconds: Annotated[float, Ge(0), Le(86400), BeforeValidator(json_number)] | None = None
    engineer: str | None = Field(default=None, max_length=200)


class ReportIn(RequestBody):
    tenant_id: str = Field(pattern=TENANT)
    month: str = Field(
        pattern=r"^(000[1-9]|00[1-9]\d|0[1-9]\d\d|[1-9]\d{3})-(0[1-9]|1[0-2])$", description="YYYY-MM, in UTC"
    )


class ApproveIn(RequestBody):
    tenant_id: str = Field(pattern=TENANT)
    approved_by: str = Field(min_length=1, max_length=200)


ReportId = Annotated[str, PathParam(pattern=r"^[0-9a-f-]{36}$")]
PDF: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}
}


class RunbookIn(RequestBody):
    tenant_id: str | None = Field(default=None, pattern=TENANT)  # None: the global library
    path: str = Field(min_length=1, max_length=500, json_schema_extra={"pattern": RELATIVE_PATH})
    markdown: str = Field(min_length=1, max_length=1_000_000)
    url: str | None = Field(default=None, max_length=2000)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not re.fullmatch(RELATIVE_PATH, value):
            raise ValueError(
                "path must be a relative name (segments that start with no blank, dot or slash; "
                "no '..'), at most 500 characters"
            )
        return value


Secret = Annotated[str, Field(min_length=1, max_length=2000)]


class _Target(RequestBody):
    tenant_id: str = Field(pattern=TENANT)
    base_url: str = Field(pattern=r"^https?://", max_length=2000)
    # The PSA's own settings (note type, outcome...); `category_ids` maps a category label to
    # the PSA's id for it (required for Autotask, whose categories are picklist values).
    options: dict[str, str | Int | Bool | dict[str, str | Int]] = Field(default_factory=dict)


class ConnectWiseCredentials(RequestBody):
    company: Secret
    public_key: Secret
    private_key: Secret
    client_id: Secret


class AutotaskCredentials(RequestBody):
    integration_code: Secret
    username: Secret
    secret: Secret


class HaloCredentials(RequestBody):
    token: Secret


class WebhookCredentials(RequestBody):
    secret: Secret | None = None  # signs each post (X-MSP-Signature) when set


class ConnectWiseTarget(_Target):
    kind: Literal["connectwise"]
    credentials: ConnectWiseCredentials


class AutotaskTarget(_Target):
    kind: Literal["autotask"]
    credentials: AutotaskCredentials


class HaloTarget(_Target):
    kind: Literal["halopsa"]
    credentials: HaloCredentials


class WebhookTarget(_Target):
    kind: Literal["webhook"]
    credentials: WebhookCredentials = Field(default_factory=WebhookCredentials)


# Each PSA's credentials, in the schema: a target without the ones its kind needs is refused
# as a field error, before anything is stored.
TargetIn = Annotated[
    ConnectWiseTarget | AutotaskTarget | HaloTarget | WebhookTarget, Field(discriminator="kind")
]


def make_router(settings: PacketSettings, packets: Packets, kb: KnowledgeBase) -> APIRouter:
    router = APIRouter()
    guard = [operator_only(settings)]
    reader = tenant_reader(settings)
    engine = packets.engine
    secret = link_secret(settings.effective_admin_token())
    own_bases = tuple(b.rstrip("/") + "/" for b in (settings.effective_page_base_url, settings.triage_url))

    def signed(url: str) -> str:
        """Links into the platform's own pages open from the page as it did (signed)."""
        return sign_url(url, secret) if url.startswith(own_bases) else url

    async def versions_of(tenant_id: str, packet_id: str) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(versions.packet_versions, engine, tenant_id, packet_id)
        if not rows:
            raise HTTPException(404, f"no packet {packet_id} for tenant {tenant_id}")
        return rows

    @router.get("/v1/packets", tags=["packets"], dependencies=[reader], responses=errors(404))
    async def list_or_find_packets(
        tenant_id: TenantQuery,
        ticket_id: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        """A tenant's packets, most recently changed first (`limit`, `offset`; `next_offset`
        when there are more); with `ticket_id`, that ticket's packet in its latest version."""
        if ticket_id is None:
            rows = await asyncio.to_thread(versions.list_packets, engine, tenant_id, limit + 1, offset)
            base = settings.effective_page_base_url
            return {
                "tenant_id": tenant_id,
                "packets": [
                    {
                        **r,
                        "page": f"{base}/v1/packets/{r['packet_id']}/page?tenant_id={tenant_id}",
                    }
                    for r in rows[:limit]
                ],
                "next_offset": offset + limit if len(rows) > limit else None,
            }
        row = await asyncio.to_thread(versions.latest_packet, engine, tenant_id, ticket_id)
        if row is None:
            raise HTTPException(404, f"no packet for ticket {ticket_id} of tenant {tenant_id}")
        return {
            "packet_id": row["packet_id"],
            "version": row["version"],
            "packet": json.loads(row["payload"]),
        }

    @router.post(
        "/v1/reports", tags=["reports"], dependencies=[reader], status_code=201, responses=errors(409, 422)
    )
    async def draft_report(body: ReportIn) -> dict[str, Any]:
        """Draft (or redraft) a tenant's report for one month: tickets by category, service
        levels, notable incidents, automation and time saved, recurring issues. Every figure
        names its query, every sentence its figures and sources. Never sent by the platform."""
        try:
            report_store.month_window(body.month)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        data = await asyncio.to_thread(report_store.gather, engine, body.tenant_id, body.month)
        content = reports_draft.compose(data, resolve_target_s=settings.report_resolve_target_h * 3600)
        saved = await asyncio.to_thread(report_store.save_draft, engine, body.tenant_id, body.month, content)
        if saved is None:
            raise HTTPException(409, f"the {body.month} report was approved: it is no longer redrafted")
        return saved

    async def one_report(tenant_id: str, report_id: str) -> dict[str, Any]:
        found = await asyncio.to_thread(report_store.get, engine, tenant_id, report_id)
        if found is None:
            raise HTTPException(404, f"no report {report_id} for tenant {tenant_id}")
        return found

    @router.get("/v1/reports/{report_id}", tags=["reports"], dependencies=[reader], responses=errors(404))
    async def get_report(report_id: ReportId, tenant_id: TenantQuery) -> dict[str, Any]:
        """A report draft (or the approved report) with its figures and sections."""
        return await one_report(tenant_id, report_id)

    @router.get(
        "/v1/reports/{report_id}/html",
        tags=["reports"],
        dependencies=[reader],
        response_class=HTMLResponse,
        responses=errors(404),
    )
    async def report_html(report_id: ReportId, tenant_id: TenantQuery) -> HTMLResponse:
        return HTMLResponse(pages.render("report.html", report=await one_report(tenant_id, report_id)))

    @router.get(
        "/v1/reports/{report_id}/pdf",
        tags=["reports"],
        dependencies=[reader],
        response_class=Response,
        responses={**PDF, **errors(404)},
    )
    async def report_pdf(report_id: ReportId, tenant_id: TenantQuery) -> Response:
        """The report as PDF (WeasyPrint), for the engineer to send once approved."""
        html = pages.render("report.html", report=await one_report(tenant_id, report_id))
        pdf = await asyncio.to_thread(pages.pdf, html)
        return Response(pdf, media_type="application/pdf")

    @router.post(
        "/v1/reports/{report_id}/approve", tags=["reports"], dependencies=[reader], responses=errors(404, 409)
    )
    async def approve_report(report_id: ReportId, body: ApproveIn) -> dict[str, Any]:
        """An engineer approves the draft (the platform still sends nothing); the time from the
        first draft to approval is the customer-report turnaround."""
        done = await asyncio.to_thread(
            report_store.approve, engine, body.tenant_id, report_id, body.approved_by
        )
        if done is None:
            await one_report(body.tenant_id, report_id)  # 404 when there is none
            raise HTTPException(409, "this report was approved already")
        report, turnaround_s = done
        sla.REPORT_TURNAROUND.labels(sla.tenant_label(body.tenant_id)).observe(turnaround_s)
        return report

    @router.get("/v1/sla", tags=["sla"], dependencies=[reader], responses=errors(422))
    async def sla_figures(
        tenant_id: TenantQuery,
        since: Annotated[
            datetime | None, Query(description="start (ISO 8601); 30 days before `until`")
        ] = None,
        until: Annotated[datetime | None, Query(description="end, exclusive (ISO 8601); now")] = None,
    ) -> dict[str, Any]:
        """A tenant's SLA figures for the tickets first seen in [`since`, `until`), from their
        lifecycle in the PSA's times: mean time to escalate, mean time to resolve after
        escalation with and without a packet, reopen rate; the engineer time spent reviewing
        packets in the window (the counter-metric) and the automation runs that finished in it,
        by outcome. Times without a zone are UTC."""
        end = _in_utc(until) if until is not None else datetime.now(UTC)
        start = _in_utc(since) if since is not None else _earlier(end, timedelta(days=30))
        # A window that ends before it starts holds no ticket: its figures are zeros.
        figures = await asyncio.to_thread(lifecycle.report, engine, tenant_id, start, end)
        review = await asyncio.to_thread(feedback.review_totals, engine, tenant_id, start, end)
        runs = await asyncio.to_thread(lifecycle.automation_runs, engine, tenant_id, start, end)
        return {**figures, "engineer_review": review, "automation_runs": runs}

    @router.get("/v1/packets/{packet_id}", tags=["packets"], dependencies=[reader], responses=errors(404))
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
            "feedback": await asyncio.to_thread(feedback.feedback_of, engine, tenant_id, packet_id),
        }

    @router.get(
        "/v1/packets/{packet_id}/page",
        tags=["packets"],
        dependencies=[reader],
        response_class=HTMLResponse,
        responses=errors(404),
    )
    async def packet_page(packet_id: PacketId, tenant_id: TenantQuery) -> HTMLResponse:
        """The latest version as a page: claims with their confidence and sources, then the
        ticket and its notes as the platform knows them (what the sources point at when the
        PSA gave no link of its own)."""
        rows = await versions_of(tenant_id, packet_id)
        packet = EscalationPacketPayload.model_validate_json(rows[-1]["payload"])
        ticket = await asyncio.to_thread(projections.get_ticket, engine, tenant_id, packet.ticket_id)
        older = ", ".join(f"v{r['version']}" for r in rows[:-1]) or "none"
        page = pages.render(
            "packet_page.html",
            title=f"Packet {packet.ticket_id} v{packet.version}",
            tenant_id=tenant_id,
            older=older,
            ticket=ticket,
            **psa.note_context(packet, link=signed),
            **_ticket_context(ticket),
        )
        return HTMLResponse(page)

    @router.post(
        "/v1/packets/{packet_id}/feedback",
        tags=["packets"],
        status_code=201,
        responses=errors(404),
    )
    async def post_feedback(packet_id: PacketId, body: FeedbackIn, who: Access = reader) -> dict[str, Any]:
        """An engineer marks a claim useful or wrong, and/or says how long the review took."""
        who.require(body.tenant_id)
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
        await asyncio.to_thread(feedback.add_feedback, engine, row)
        tenant = sla.tenant_label(body.tenant_id)
        if body.verdict:
            packet_engine.FEEDBACK.labels(body.verdict).inc()
            if body.verdict == "wrong":
                sla.CORRECTIONS.labels(tenant, "packet_claim_wrong").inc()
        if body.review_seconds is not None:
            packet_engine.REVIEW.observe(body.review_seconds)
            sla.ENGINEER_REVIEW.labels(tenant, "packet").observe(body.review_seconds)
        return row

    @router.put("/v1/kb/runbooks", tags=["knowledge base"], dependencies=guard)
    async def put_runbook(body: RunbookIn) -> dict[str, Any]:
        """Add or replace a runbook of a tenant (or of the global library, without tenant)."""
        try:
            return await asyncio.to_thread(kb.put, body.tenant_id, body.path, body.markdown, body.url)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @router.delete("/v1/kb/runbooks", tags=["knowledge base"], dependencies=guard, responses=errors(404))
    async def delete_runbook(
        path: Annotated[str, Query(min_length=1, max_length=500)],
        tenant_id: Annotated[str | None, Query(pattern=TENANT)] = None,
    ) -> dict[str, Any]:
        if not await asyncio.to_thread(kb.remove, tenant_id, path):
            raise HTTPException(
                404, f"no runbook {path} in {'the global library' if tenant_id is None else tenant_id}"
            )
        return {"deleted": path}

    @router.get("/v1/kb/runbooks", tags=["knowledge base"], dependencies=guard)
    async def list_runbooks(tenant_id: Annotated[str | None, Query(pattern=TENANT)] = None) -> dict[str, Any]:
        scope = "global" if tenant_id is None else f"tenant:{tenant_id}"
        return {"scope": scope, "runbooks": await asyncio.to_thread(runbooks.list_runbooks, engine, scope)}

    @router.get(
        "/v1/kb/runbooks/page",
        tags=["knowledge base"],
        dependencies=[reader],
        response_class=HTMLResponse,
        responses=errors(404),
    )
    async def runbook_page(
        tenant_id: TenantQuery,
        path: Annotated[str, Query(min_length=1, max_length=500)],
        scope: Annotated[Literal["tenant", "global"], Query()] = "tenant",
    ) -> HTMLResponse:
        """A runbook of the tenant (or of the global library) as a page, each section under an
        anchor: where a packet's runbook claims link when the runbook has no URL of its own."""
        key = "global" if scope == "global" else scope_of(tenant_id)
        found = await asyncio.to_thread(runbooks.get_runbook, engine, key, path)
        if found is None:
            where = "the global library" if scope == "global" else f"tenant {tenant_id}"
            raise HTTPException(404, f"no runbook {path} in {where}")
        book = parse(found["source"], fallback_title=found["title"])
        return HTMLResponse(
            pages.render("runbook_page.html", title=book.title, book=book, key=key, path=path)
        )

    @router.get("/v1/kb/search", tags=["knowledge base"], dependencies=guard)
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

    @router.put("/v1/psa", tags=["psa"], dependencies=guard)
    async def put_target(body: TargetIn) -> dict[str, Any]:
        """Where a tenant's packets are posted (one PSA per tenant)."""
        released = await asyncio.to_thread(
            functools.partial(targets.set_target, box=packets.box),
            engine,
            body.tenant_id,
            body.kind,
            body.base_url,
            body.credentials.model_dump(exclude_none=True),
            body.options,
        )
        packets.forget_target(body.tenant_id)
        packets.wake()
        return {
            "tenant_id": body.tenant_id,
            "configured": True,
            "kind": body.kind,
            "base_url": body.base_url,
            "options": body.options,
            "released_notes": released,
        }

    @router.get("/v1/psa", tags=["psa"], dependencies=guard)
    async def get_target(tenant_id: TenantQuery) -> dict[str, Any]:
        """The tenant's PSA target (never its credentials). Without one, or with credentials
        this service cannot decrypt (`credentials_readable`), packets are still built and
        kept; their notes wait (`waiting_notes`) and are posted, the latest version of each
        packet, as soon as a target is set with PUT /v1/psa."""
        found = await asyncio.to_thread(
            functools.partial(targets.describe_target, box=packets.box), engine, tenant_id
        )
        if found is None:
            waiting = await asyncio.to_thread(versions.waiting_notes, engine, tenant_id)
            return {
                "tenant_id": tenant_id,
                "configured": False,
                "waiting_notes": waiting,
                "detail": f"no PSA target: {waiting} packet note(s) wait until one is set with PUT /v1/psa",
            }
        described = {"tenant_id": tenant_id, "configured": True, **found}
        if not found["credentials_readable"]:
            waiting = await asyncio.to_thread(versions.waiting_notes, engine, tenant_id)
            described["waiting_notes"] = waiting
            described["detail"] = (
                "the stored credentials cannot be decrypted with this MSP_SECRETS_KEY: "
                f"{waiting} packet note(s) wait until the target is set again with PUT /v1/psa"
            )
        return described

    return router


def _ticket_context(ticket: KnownTicket | None) -> dict[str, Any]:
    """The ticket's facts and notes for the packet page, each note with the anchor its sources
    link to."""
    if ticket is None:
        return {"facts": [], "notes": []}
    snap = ticket.snapshot.model_dump()
    facts = [
        (k, ", ".join(v) if isinstance(v, list) else str(v))
        for k, v in snap.items()
        if v not in (None, "", []) and k not in ("ticket_id", "title", "description")
    ]
    notes = [
        {"anchor": builder.anchor_of("note", n.note_id), "author": n.author, "text": n.text}
        for n in ticket.notes
    ]
    return {"facts": facts, "notes": notes}
