"""The packet service at work: it follows tickets, signals and triage results per tenant; when
a ticket escalates it builds a packet, and a new version whenever what the packet would say
changes (a note, a signal opening or resolving on the ticket's devices); every version is
published on `packets.escalation.v1` and posted once into the tenant's PSA as an internal note.

Posting goes through an outbox: the version and its pending delivery are written together;
a worker posts due deliveries, retrying with backoff while the PSA fails.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from cachetools import TTLCache
from prometheus_client import Counter, Histogram
from sqlalchemy import Connection, Engine

from libs.common import inbox, sla
from libs.common.audit import AuditEmitter, audit_event
from libs.common.bus import EventProducer
from libs.common.crypto import SecretBox, SecretBoxError, new_key
from libs.common.events import (
    AutomationResult,
    AutomationRun,
    Claim,
    EscalationPacket,
    EscalationPacketPayload,
    EventSource,
    SignalClustered,
    TicketEvent,
    TicketNote,
    TicketTriaged,
    derive_event_id,
    utcnow,
)
from libs.common.outbox import OutboxRelay
from libs.common.reasoning import Evidence, Reasoning, SummariseInput, SummariseOutput, audit_fallback
from services.packet import builder, psa, tables
from services.packet.kb.base import KnowledgeBase
from services.packet.kb.promql import expression_of, expression_terms
from services.packet.known import KnownTicket, merge_ticket
from services.packet.store import lifecycle, projections, psa_writes, targets, versions

log = logging.getLogger(__name__)

PACKET_NAMESPACE = uuid.UUID("0b6f3a52-6a8e-4d59-b3a4-2f0f6f3e1c7d")
SIGNAL_TRIGGERS = {"opened", "resolved", "merged"}
SHOWN_MODES = ("suggest", "auto")
CONTEXT_WINDOW = timedelta(hours=24)

_LATENCY = Histogram(
    "msp_packet_latency_seconds",
    "From the event that caused a packet version to its note posted in the PSA",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
_BUILD = Histogram("msp_packet_build_seconds", "Time to build a packet version")
_CLAIMS = Histogram("msp_packet_claims", "Claims per packet version", buckets=(1, 2, 5, 10, 20, 50))
_CONFIDENT = Histogram(
    "msp_packet_confident_share",
    "Share of a packet's claims with confidence above 0.8",
    buckets=(0.2, 0.4, 0.6, 0.8, 1.0),
)
_VERSIONS = Counter("msp_packet_versions_total", "Packet versions built", ["trigger"])
_DELIVERIES = Counter("msp_packet_deliveries_total", "PSA note posts", ["kind", "outcome"])
_CATEGORIES = Counter(
    "msp_packet_category_writes_total",
    "Categories set in a PSA in `auto` rollout mode (set, retry, failed; kept: the ticket had one)",
    ["outcome"],
)
FEEDBACK = Counter("msp_packet_feedback_total", "Engineers' verdicts on packet claims", ["verdict"])
REVIEW = Histogram(
    "msp_packet_review_seconds",
    "Time engineers report spending on a packet",
    buckets=(10, 30, 60, 120, 300, 600, 1800),
)


# What a packet holds as known (its "still unknown" part is what it does not).
KNOWN_PARTS = ("summary", "related_alerts", "runbook", "already_tried", "similar_cases")


def known_notes(known: KnownTicket | None) -> list[TicketNote]:
    return list(known.notes) if known is not None else []


def observe_lifecycle(tenant_id: str, kind: str, at: datetime, figures: lifecycle.TicketFigures) -> None:
    """The SLA metrics one ticket event moves, the first time it is seen."""
    tenant = sla.tenant_label(tenant_id)
    at = at.astimezone(UTC)
    if kind == "created":
        sla.TICKET_TRANSITIONS.labels(tenant, "created").inc()
    elif kind == "escalated" and figures.escalated_at == at and figures.time_to_escalate_s is not None:
        sla.TICKET_TRANSITIONS.labels(tenant, "escalated").inc()
        sla.TIME_TO_ESCALATE.labels(tenant).observe(figures.time_to_escalate_s)
    elif kind == "reopened":
        sla.TICKET_TRANSITIONS.labels(tenant, "reopened").inc()
    elif figures.resolves(kind):
        sla.TICKET_TRANSITIONS.labels(tenant, "resolved").inc()
        took = figures.time_to_resolve_after_escalation_s
        if figures.resolved_at == at and took is not None:
            packet = "yes" if figures.resolved_with_packet else "no"
            sla.TIME_TO_RESOLVE_ESCALATED.labels(tenant, packet).observe(took)


def packet_id_for(tenant_id: str, ticket_id: str) -> uuid.UUID:
    return uuid.uuid5(PACKET_NAMESPACE, f"{tenant_id}\x1f{ticket_id}")


_T = TypeVar("_T")


@dataclass(frozen=True)
class _Built:
    """A packet version written in a transaction not yet committed, and what its commit is
    followed by (see `Packets._after_version`)."""

    tenant: str
    payload: EscalationPacketPayload
    deliver: bool
    trigger: str
    claims: list[Claim]
    started: float


@dataclass(frozen=True)
class _Took:
    """What one ticket event changed (see `Packets._take_ticket`)."""

    ticket: KnownTicket
    figures: lifecycle.TicketFigures | None  # None: the event was seen before
    repeat_questions: int
    built: _Built | None


@dataclass(frozen=True)
class PacketTunables:
    """The defaults of the service's tunables, declared once (PacketSettings reads them)."""

    check_match_threshold: float = 0.58  # cosine above which a note answers a runbook check
    retry_base_s: float = 1.0  # a failed PSA post waits this, doubling per attempt...
    retry_max_s: float = 60.0  # ...up to this
    max_attempts: int = 10
    psa_timeout_s: float = 10.0
    signal_update_every_s: float = 60.0  # alerts joining a signal re-version a packet at most this often
    target_ttl_s: float = 5.0  # a tenant's PSA target is read again after this (set here: at once)
    psa_concurrency: int = 16  # tickets whose PSA writes are in flight at once (each ticket's in order)
    lease_s: float = 60.0  # a poster holds a due write this long; a dead poster's write is due again after
    due_batch: int = 50  # due writes taken per pass


class Packets:
    def __init__(
        self,
        *,
        engine: Engine,
        producer: EventProducer,
        audit: AuditEmitter,
        kb: KnowledgeBase,
        reasoning: Reasoning | None = None,
        page_base_url: str | None = None,
        triage_url: str | None = None,
        check_match_threshold: float = PacketTunables.check_match_threshold,
        retry_base_s: float = PacketTunables.retry_base_s,
        retry_max_s: float = PacketTunables.retry_max_s,
        max_attempts: int = PacketTunables.max_attempts,
        psa_timeout_s: float = PacketTunables.psa_timeout_s,
        signal_update_every_s: float = PacketTunables.signal_update_every_s,
        psa_concurrency: int = PacketTunables.psa_concurrency,
        lease_s: float = PacketTunables.lease_s,
        due_batch: int = PacketTunables.due_batch,
        namespace: str = "",
        box: SecretBox | None = None,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.audit = audit
        self.kb = kb
        self.reasoning = reasoning
        self.page_base_url = page_base_url
        self.triage_url = triage_url
        self.check_match_threshold = check_match_threshold
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.max_attempts = max_attempts
        self.psa_timeout_s = psa_timeout_s
        self.signal_update_every_s = signal_update_every_s
        self.psa_concurrency = psa_concurrency
        self.lease_s = lease_s
        self.due_batch = due_batch
        self.namespace = namespace
        # Tenants' PSA credentials are stored encrypted with this box.
        self.box = box or SecretBox(new_key())
        # What the service says (packet events, audits) leaves through the outbox.
        self.outbox = OutboxRelay(engine, tables.outbox, producer, "packet")
        self._last_version: dict[tuple[str, str], float] = {}
        # tenant -> its PSA target, kept target_ttl_s; read and written from worker threads.
        self._targets: TTLCache[str, dict[str, Any]] = TTLCache(
            maxsize=100_000, ttl=PacketTunables.target_ttl_s
        )
        self._targets_lock = threading.Lock()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        # One HTTP client per delivery slot, each used by one lane at a time: httpcore checks
        # every pooled connection of a client for expiry (a poll call each) whenever a request
        # starts or ends, so one client shared by all slots spent more time polling sockets
        # than posting (a quarter of the event loop at 100 escalations/s).
        self._clients: asyncio.Queue[httpx.AsyncClient] | None = None
        self.running = False

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._clients = asyncio.Queue()
        for _ in range(self.psa_concurrency):
            self._clients.put_nowait(httpx.AsyncClient(timeout=self.psa_timeout_s))
        await self.outbox.start()
        self.running = True
        self._worker = asyncio.create_task(self._deliver_forever(), name="packet-deliveries")

    def wake(self) -> None:
        """Look for due deliveries now (a PSA target was just set)."""
        self._wake.set()

    async def stop(self) -> None:
        self.running = False
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._clients is not None:
            while not self._clients.empty():
                await self._clients.get_nowait().aclose()
        await self.outbox.stop()

    def target(self, tenant: str, conn: Connection | None = None) -> dict[str, Any] | None:
        """The tenant's PSA target, read at most every `target_ttl_s` (blocking: call it in a
        thread; on `conn` when given). Only a configured target is kept: "none configured" is
        always read afresh, so a target set through another instance is used by the next
        version, never missed."""
        known = self._known_target(tenant)
        if known is not None:
            return known
        found = targets.get_target(conn or self.engine, tenant, box=self.box)
        with self._targets_lock:
            if found is None:
                self._targets.pop(tenant, None)
            else:
                self._targets[tenant] = found
        return found

    def usable_target(self, tenant: str, conn: Connection | None = None) -> tuple[dict[str, Any] | None, str]:
        """`target`, and why there is none to post to (blocking: call it in a thread). Stored
        credentials this process cannot decrypt (the secrets key changed) make the tenant's
        notes wait, visibly, until the target is set again, as when there is none: the
        packets are still built, and nothing is retried in a loop meanwhile."""
        try:
            return self.target(tenant, conn), versions.NO_TARGET
        except SecretBoxError:
            log.warning(
                "a tenant's PSA target cannot be decrypted; its notes wait", extra={"tenant_id": tenant}
            )
            return None, versions.UNREADABLE_TARGET

    async def _usable_target(self, tenant: str) -> tuple[dict[str, Any] | None, str]:
        """`usable_target`, without a thread when the target is at hand."""
        known = self._known_target(tenant)
        if known is not None:
            return known, versions.NO_TARGET
        return await asyncio.to_thread(self.usable_target, tenant)

    def _known_target(self, tenant: str) -> dict[str, Any] | None:
        with self._targets_lock:
            return self._targets.get(tenant)

    def forget_target(self, tenant: str) -> None:
        """The target was just set through this process: read it afresh."""
        with self._targets_lock:
            self._targets.pop(tenant, None)

    # --- the stream -------------------------------------------------------------------------

    async def handle(self, event: Any, _record: Any) -> None:
        if isinstance(event, TicketEvent):
            await self._ticket(event)
        elif isinstance(event, TicketTriaged):
            # Only what the tenant's rollout mode shows engineers (suggest, auto) reaches a
            # packet; a shadow result is for measurement and is shown to nobody.
            if event.payload.rollout_mode in SHOWN_MODES:
                await asyncio.to_thread(
                    projections.save_triage,
                    self.engine,
                    event.tenant_id,
                    event.payload.ticket_id,
                    event.payload.model_dump(mode="json"),
                )
                if event.payload.rollout_mode == "auto" and event.payload.apply_category:
                    await self._queue_category(event)
            else:
                await asyncio.to_thread(
                    projections.drop_triage, self.engine, event.tenant_id, event.payload.ticket_id
                )
        elif isinstance(event, SignalClustered):
            await self._signal(event)
        elif isinstance(event, AutomationRun) and not event.payload.dry_run:  # a dry run changed nothing
            steps = [s.model_dump(mode="json") for s in event.payload.steps]
            await asyncio.to_thread(
                projections.record_run,
                self.engine,
                event.tenant_id,
                str(event.payload.run_id),
                event.payload.ticket_id,
                steps,
            )
        elif isinstance(event, AutomationResult) and not event.payload.dry_run:
            await self._result(event)

    async def _result(self, event: AutomationResult) -> None:
        p = event.payload
        if p.outcome in ("succeeded", "failed", "partial"):
            sla.AUTOMATION_RUNS.labels(sla.tenant_label(event.tenant_id), p.outcome).inc()
        await self._queue_action_notes(event)
        ticket_id = await asyncio.to_thread(
            projections.record_result,
            self.engine,
            event.tenant_id,
            str(p.run_id),
            p.outcome,
            [s.model_dump(mode="json") for s in p.steps],
            p.logs_url,
        )
        if ticket_id is None:
            return
        ticket = await asyncio.to_thread(projections.get_ticket, self.engine, event.tenant_id, ticket_id)
        if ticket is not None and ticket.open_escalation:
            await self.rebuild(event.tenant_id, ticket, event, trigger="automation_result")

    async def _queue_action_notes(self, event: AutomationResult) -> None:
        """A run's `psa.add_note` steps are posted into the ticket by this service's PSA
        writers (the automation service never talks to a PSA), once per step."""
        p = event.payload
        notes = [s for s in p.steps if s.action == "psa.add_note" and s.outcome == "succeeded"]
        if not notes or not p.ticket_id:
            return
        for step in notes:
            await self._queue_write(
                event.tenant_id,
                {
                    "write_key": step.idempotency_key or f"{p.run_id}:{step.index}",
                    "kind": "note",
                    "ticket_id": p.ticket_id,
                    "cause_id": str(p.run_id),
                    "requested_by": p.requested_by or "an engineer",
                    "text": str(step.params.get("text", "")),
                },
            )

    async def _queue_category(self, event: TicketTriaged) -> None:
        """`auto` mode: the PSA writer sets the category triage decided, once per (ticket,
        category), unless the ticket already carries a category (an engineer's, or the PSA's
        own): the platform never overwrites one."""
        p, tenant = event.payload, event.tenant_id
        if p.category.label is None:
            return
        known = await asyncio.to_thread(projections.get_ticket, self.engine, tenant, p.ticket_id)
        current = known.snapshot.category if known else None
        if current:
            _CATEGORIES.labels("kept").inc()
            return
        key = hashlib.sha256(f"category|{tenant}|{p.ticket_id}|{p.category.label}".encode()).hexdigest()
        await self._queue_write(
            tenant,
            {
                "write_key": key,
                "kind": "category",
                "ticket_id": p.ticket_id,
                "cause_id": str(event.event_id),
                "requested_by": "ticket triage (auto)",
                "text": p.category.label,
                "details": json.dumps(
                    {"confidence": p.category.confidence, "method": p.category.method}, sort_keys=True
                ),
            },
        )

    async def _queue_write(self, tenant: str, row: dict[str, Any]) -> None:
        target, why = await self._usable_target(tenant)
        added = await asyncio.to_thread(
            functools.partial(psa_writes.add_psa_write, has_target=target is not None, waiting_reason=why),
            self.engine,
            {"tenant_id": tenant, **row},
        )
        if added:
            self._wake.set()

    async def _ticket(self, event: TicketEvent) -> None:
        started = time.perf_counter()
        took = await asyncio.to_thread(self._take_ticket, event, started)
        tenant, kind, at = event.tenant_id, event.payload.kind, event.occurred_at
        if took.figures is not None:  # seen for the first time
            observe_lifecycle(tenant, kind, at, took.figures)
        if took.repeat_questions:
            sla.REPEAT_QUESTIONS.labels(sla.tenant_label(tenant)).inc(took.repeat_questions)
        if took.built is not None:
            self._after_version(took.built)
        elif took.ticket.open_escalation and self._claude_summaries:
            # Claude's summary is asked for outside the transaction (see `rebuild`).
            await self.rebuild(tenant, took.ticket, event, trigger=kind)

    @staticmethod
    def records(event: Any) -> bool:
        """The events this service records in its inbox itself, in the transaction of what
        they changed (`inbox.Counted.handler`'s `recorded_by_handler`): ticket events."""
        return isinstance(event, TicketEvent)

    def _take_ticket(self, event: TicketEvent, started: float) -> _Took:
        """One ticket event in one transaction: the ticket, its lifecycle row, and the packet
        version it makes (with its delivery and events), unless Claude writes the summary."""
        tenant, ticket_id = event.tenant_id, event.payload.ticket.ticket_id
        kind, at = event.payload.kind, event.occurred_at
        with self.engine.begin() as conn:
            known = projections.get_ticket(conn, tenant, ticket_id)
            ticket = merge_ticket(known, event)
            projections.save_ticket(conn, tenant, ticket)
            figures = lifecycle.record(conn, tenant, ticket_id, str(event.event_id), kind, at)
            inbox.record_all(conn, tables.inbox, [event])  # counted with what it changed (`records`)
            note, earlier = event.payload.note, known_notes(known)
            repeats = 0
            if note is not None and not note.internal and all(n.note_id != note.note_id for n in earlier):
                repeats = self._repeat_questions(conn, tenant, ticket_id, note.text, earlier)
            built = None
            if ticket.open_escalation and not self._claude_summaries:
                built = self._build_version(conn, tenant, ticket, event, kind, started)
        return _Took(ticket, figures, repeats, built)

    async def _signal(self, event: SignalClustered) -> None:
        tenant, payload = event.tenant_id, event.payload
        fresh = await asyncio.to_thread(
            projections.apply_signal, self.engine, tenant, payload.model_dump(mode="json")
        )
        # A signal opening, resolving or merging makes a new version at once; new alerts
        # joining an open one do at most once a minute per ticket (a noisy signal would
        # otherwise post a note for every alert).
        grew = payload.state == "updated" and bool(payload.added_alert_ids)
        if not fresh or not (payload.state in SIGNAL_TRIGGERS or grew):
            return
        now = time.monotonic()
        for ticket in await asyncio.to_thread(projections.escalated_tickets, self.engine, tenant):
            snap = ticket.snapshot
            if not builder.touches(snap.devices, snap.site, payload.devices, payload.sites):
                continue
            key = (tenant, ticket.ticket_id)
            if grew and now - self._last_version.get(key, -1e9) < self.signal_update_every_s:
                continue
            await self.rebuild(tenant, ticket, event, trigger=f"signal_{payload.state}")

    def _repeat_questions(
        self, conn: Connection, tenant: str, ticket_id: str, text: str, earlier: Sequence[TicketNote]
    ) -> int:
        """How many questions of a client-visible note ask the customer for what an earlier
        note or the packet already holds (`msp_sla_repeat_questions_total`): matched by
        meaning, as a note answering a runbook check is."""
        questions = builder.questions_to_customer(text)
        if not questions:
            return 0
        held = [s for n in earlier for s in builder.note_sentences(n.text)]
        latest = versions.latest_packet(conn, tenant, ticket_id)
        if latest is not None:
            payload = json.loads(latest["payload"])
            held += [c["text"] for part in KNOWN_PARTS for c in payload.get(part, [])]
        return sum(self._answered(questions, held)) if held else 0

    # --- building ---------------------------------------------------------------------------

    @property
    def _claude_summaries(self) -> bool:
        return self.reasoning is not None and self.reasoning.claude is not None

    async def rebuild(
        self, tenant: str, ticket: KnownTicket, cause: Any, *, trigger: str
    ) -> EscalationPacketPayload | None:
        """A new packet version when its content changed; None when it did not. Read, built
        and written in one transaction; with Claude writing the summary, the reading and the
        writing are two (no transaction is held open across a call to Claude)."""
        started = time.perf_counter()
        if not self._claude_summaries:
            built = await asyncio.to_thread(
                self._in_transaction, self._build_version, tenant, ticket, cause, trigger, started
            )
        else:
            parts = await asyncio.to_thread(self._parts, self.engine, tenant, ticket)
            summary = await self._summary(tenant, ticket, parts, cause)
            built = await asyncio.to_thread(
                self._in_transaction,
                self._write_version,
                tenant,
                ticket,
                parts,
                summary,
                cause,
                trigger,
                started,
            )
        if built is None:
            return None
        self._after_version(built)
        return built.payload

    def _in_transaction(self, work: Callable[..., _T], *args: Any) -> _T:
        with self.engine.begin() as conn:
            return work(conn, *args)

    def _build_version(
        self, conn: Connection, tenant: str, ticket: KnownTicket, cause: Any, trigger: str, started: float
    ) -> _Built | None:
        parts = self._parts(conn, tenant, ticket)
        return self._write_version(conn, tenant, ticket, parts, parts.summary, cause, trigger, started)

    def _write_version(
        self,
        conn: Connection,
        tenant: str,
        ticket: KnownTicket,
        parts: builder.PacketParts,
        summary: list[Claim],
        cause: Any,
        trigger: str,
        started: float,
    ) -> _Built | None:
        """The version, its delivery and its events, written on `conn`; None when the content
        is the latest version's."""
        content: dict[str, list[Any]] = {
            "summary": summary,
            "related_alerts": parts.related_alerts,
            "runbook": parts.runbook,
            "already_tried": parts.already_tried,
            "still_unknown": parts.still_unknown,
            "similar_cases": parts.similar_cases,
        }
        digest = hashlib.sha256(
            json.dumps(
                {k: [c.model_dump(mode="json") for c in v] for k, v in content.items()}, sort_keys=True
            ).encode()
        ).hexdigest()
        latest = versions.latest_packet(conn, tenant, ticket.ticket_id)
        if latest is not None and latest["content_hash"] == digest:
            return None
        packet_id = packet_id_for(tenant, ticket.ticket_id)
        version = 1 if latest is None else int(latest["version"]) + 1
        payload = EscalationPacketPayload(
            packet_id=packet_id, ticket_id=ticket.ticket_id, version=version, **content
        )  # type: ignore[arg-type]
        target, why = self.usable_target(tenant, conn)
        created = utcnow()
        packet_event = EscalationPacket(
            event_id=derive_event_id(tenant, "packet", str(packet_id), str(version)),
            tenant_id=tenant,
            occurred_at=created,
            ingested_at=created,
            source=EventSource(system="msp.packet", reference=ticket.ticket_id, link=ticket.snapshot.url),
            payload=payload,
        )
        built = audit_event(
            service="packet",
            tenant_id=tenant,
            action="packet.version.built",
            subject_kind="packet",
            subject_id=f"{packet_id}:v{version}",
            cause_id=str(cause.event_id),
            details={
                "ticket_id": ticket.ticket_id,
                "trigger": trigger,
                "psa": target["kind"] if target else None,
            },
        )
        versions.save_packet(
            conn,
            tenant_id=tenant,
            ticket_id=ticket.ticket_id,
            packet_id=packet_id,
            version=version,
            content_hash=digest,
            payload=payload.model_dump_json(),
            cause_event_id=str(cause.event_id),
            trigger_at=cause.ingested_at,
            deliver=target is not None,
            events=[packet_event, built],
            namespace=self.namespace,
            waiting_reason=why,
        )
        claims = [c for k, v in content.items() if k != "still_unknown" for c in v]
        return _Built(tenant, payload, target is not None, trigger, claims, started)

    def _after_version(self, built: _Built) -> None:
        """What follows a version's commit: its events and delivery are due, and it is counted."""
        self.outbox.wake()
        if built.deliver:
            self._wake.set()
        self._last_version[(built.tenant, built.payload.ticket_id)] = time.monotonic()
        _VERSIONS.labels(built.trigger).inc()
        _CLAIMS.observe(len(built.claims))
        if built.claims:
            _CONFIDENT.observe(sum(c.confidence > 0.8 for c in built.claims) / len(built.claims))
        _BUILD.observe(time.perf_counter() - built.started)

    def _parts(self, bind: Engine | Connection, tenant: str, ticket: KnownTicket) -> builder.PacketParts:
        snap = ticket.snapshot
        now = datetime.now(UTC)
        signals, triage, runs = projections.context(
            bind,
            tenant,
            ticket.ticket_id,
            snap.devices,
            snap.site,
            now - CONTEXT_WINDOW,
            now,
        )
        nearest = signals[:3]
        alerts = [a for s in nearest for a in s.alerts]
        # What the rules of the alerts involved watch (the metric names and label values of a
        # Prometheus rule's expression, carried in the alert's link) says what is wrong in
        # words their runbooks use, whatever the alert's own text.
        watched = dict.fromkeys(filter(None, (expression_of(a.url) for a in alerts)))
        query = " ".join(
            [snap.title, snap.description, *(s.title for s in nearest), *map(expression_terms, watched)]
        )
        # The rules of the alerts involved name their runbooks (a Prometheus rule's alert name
        # is its runbook's title; an RMM's check name often is).
        rules = list(dict.fromkeys(a.rule for a in alerts if a.rule))
        runbooks = self.kb.search(tenant, query, k=3, names=rules)
        links = builder.Links(tenant, packet_base=self.page_base_url, triage_base=self.triage_url)
        return builder.build(
            ticket,
            signals,
            runbooks,
            triage,
            runs,
            links=links,
            answered=self._answered,
            packet_id=str(packet_id_for(tenant, ticket.ticket_id)),
        )

    def _answered(self, checks: Sequence[str], sentences: Sequence[str]) -> list[bool]:
        """Which runbook checks a note already reports, by meaning: a check is answered when a
        note sentence is close to it in the sentence model's space ("Checked shadow copies:
        they use 2%" answers "Check whether shadow copies take more than 10% of the volume"),
        or when the note uses most of the check's own words."""
        lexical = builder.lexical_matcher(checks, sentences)
        vectors = self.kb.embedder.encode([*checks, *sentences])
        similarity = vectors[: len(checks)] @ vectors[len(checks) :].T
        best = similarity.max(axis=1)
        return [bool(w or b >= self.check_match_threshold) for w, b in zip(lexical, best, strict=True)]

    async def _summary(
        self, tenant: str, ticket: KnownTicket, parts: builder.PacketParts, cause: Any
    ) -> list[Claim]:
        """Claude's summary when configured, each sentence citing the packet's sources; the
        extractive one otherwise, or when Claude's answer cites nothing it was given."""
        if self.reasoning is None or self.reasoning.claude is None:
            return parts.summary
        question = SummariseInput(
            subject=f"{ticket.snapshot.title}\n{ticket.snapshot.description}"[:2000],
            sources=[
                Evidence(key=k, kind=s.kind, id=s.id, excerpt=s.excerpt) for k, s in parts.sources.items()
            ],
        )
        fell_back = audit_fallback(
            self.audit,
            tenant_id=tenant,
            subject_kind="ticket",
            subject_id=ticket.ticket_id,
            cause_id=str(cause.event_id),
        )
        answer = await self.reasoning.ask_claude("summarise", tenant, question, on_fallback=fell_back)
        if not isinstance(answer, SummariseOutput):
            return parts.summary
        return [
            Claim(text=s.text, confidence=0.8, sources=[parts.sources[k] for k in s.sources])
            for s in answer.sentences
        ]

    # --- delivering -------------------------------------------------------------------------

    async def _deliver_forever(self) -> None:
        while self.running:
            busy = False
            try:
                busy = await self.deliver_due() > 0
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery pass failed; trying again shortly")
            if busy:
                continue  # more may be due already: look again at once
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
            except TimeoutError:
                pass
            self._wake.clear()

    async def deliver_due(self) -> int:
        """One pass over what is due: each ticket's writes in order (its queued notes and
        categories, then its packet versions, oldest first), up to `psa_concurrency` tickets
        at once. Returns how many writes were attempted."""
        writes = await asyncio.to_thread(
            psa_writes.claim_psa_writes, self.engine, self.due_batch, self.lease_s
        )
        due = await asyncio.to_thread(versions.claim_deliveries, self.engine, self.due_batch, self.lease_s)
        lanes: dict[tuple[str, str], list[Callable[[httpx.AsyncClient], Awaitable[int]]]] = {}
        for write in writes:
            lanes.setdefault((write["tenant_id"], write["ticket_id"]), []).append(
                functools.partial(self._deliver_write, write)
            )
        for row in sorted(due, key=lambda r: (r["packet_id"], r["version"])):
            lanes.setdefault(("packet", row["packet_id"]), []).append(functools.partial(self._deliver, row))
        clients = self._clients
        assert clients is not None

        async def lane(steps: list[Callable[[httpx.AsyncClient], Awaitable[int]]]) -> int:
            client = await clients.get()  # a free delivery slot
            try:
                for step in steps:
                    await step(client)
                return len(steps)
            finally:
                clients.put_nowait(client)

        done = await asyncio.gather(*(lane(steps) for steps in lanes.values()), return_exceptions=True)
        for failed in (d for d in done if isinstance(d, BaseException)):
            # The database, most likely: the write's lease runs out and it is due again.
            log.error("a PSA write failed outside the PSA call", exc_info=failed)
        return sum(d for d in done if isinstance(d, int))

    async def _deliver_write(self, row: dict[str, Any], client: httpx.AsyncClient) -> int:
        """One queued PSA write: a step's note (looked up by its marker before it is posted
        again) or a category (setting a field to a value is idempotent)."""
        tenant, key, what = row["tenant_id"], row["write_key"], row["kind"]
        target, why = await self._usable_target(tenant)
        attempts = row["attempts"] + 1
        if target is None:
            await asyncio.to_thread(
                psa_writes.finish_psa_write,
                self.engine,
                key,
                status="waiting",
                attempts=row["attempts"],
                error=why,
            )
            return 0
        kind, to = target["kind"], psa.Target(**target)
        action = "packet.action_note" if what == "note" else "packet.category"
        details: dict[str, Any] = {"psa": kind, "attempts": attempts}
        remote: str | None = None
        try:
            if what == "category":
                decision = json.loads(row["details"] or "{}")
                await psa.set_category(client, to, tenant, row["ticket_id"], row["text"], decision, key)
                details.update(category=row["text"], triage_event_id=row["cause_id"], **decision)
            else:
                note = psa.action_note(key, row["text"], row["cause_id"], row["requested_by"])
                details["run_id"] = row["cause_id"]
                remote = await psa.find_posted(client, to, row["ticket_id"], note)
                if remote is None:
                    remote = await psa.post(client, to, tenant, row["ticket_id"], note, None)
        except psa.DeliveryError as exc:
            give_up = not exc.retry or attempts >= self.max_attempts
            delay = min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1))
            failed = audit_event(
                service="packet",
                tenant_id=tenant,
                action=f"{action}.failed",
                subject_kind="ticket",
                subject_id=row["ticket_id"],
                cause_id=f"{key}:failed",
                outcome="failed",
                details={**details, "error": str(exc)[:500]},
            )
            await asyncio.to_thread(
                psa_writes.finish_psa_write,
                self.engine,
                key,
                status="failed" if give_up else "pending",
                attempts=attempts,
                next_at=utcnow() + timedelta(seconds=delay),
                error=str(exc)[:1000],
                events=[failed] if give_up else [],
                namespace=self.namespace,
            )
            self.outbox.wake()
            if what == "category":
                _CATEGORIES.labels("failed" if give_up else "retry").inc()
            else:
                _DELIVERIES.labels(kind, "failed" if give_up else "retry").inc()
            return 0
        done = audit_event(
            service="packet",
            tenant_id=tenant,
            action=f"{action}.{'set' if what == 'category' else 'posted'}",
            subject_kind="ticket",
            subject_id=row["ticket_id"],
            cause_id=f"{key}:posted",
            details={**details, "remote_id": remote} if what == "note" else details,
        )
        await asyncio.to_thread(
            psa_writes.finish_psa_write,
            self.engine,
            key,
            status="posted",
            attempts=attempts,
            remote_id=remote,
            events=[done],
            namespace=self.namespace,
        )
        self.outbox.wake()
        if what == "category":
            _CATEGORIES.labels("set").inc()
        else:
            _DELIVERIES.labels(kind, "posted").inc()
        return 1

    async def _deliver(self, row: dict[str, Any], client: httpx.AsyncClient) -> int:
        target, why = await self._usable_target(row["tenant_id"])
        if row["payload"] is None or target is None:
            # Credentials this process cannot decrypt: the note waits for the target to be set
            # again; no packet, or no target any more: nothing to post.
            waits = row["payload"] is not None and why == versions.UNREADABLE_TARGET
            await asyncio.to_thread(
                versions.finish_delivery,
                self.engine,
                row["packet_id"],
                row["version"],
                status="waiting" if waits else "skipped",
                attempts=row["attempts"],
                error=why if waits else "no packet or no PSA target",
            )
            return 0
        tenant, trigger_at = row["tenant_id"], row["trigger_at"]
        packet = EscalationPacketPayload.model_validate_json(row["payload"])
        page = (
            f"{self.page_base_url.rstrip('/')}/v1/packets/{packet.packet_id}/page?tenant_id={tenant}"
            if self.page_base_url
            else None
        )
        attempts = row["attempts"] + 1
        kind = target["kind"]
        try:
            # An earlier attempt may have reached the PSA before its outcome was recorded (the
            # process died, the answer timed out, or the database lost the record: a crash or
            # a failover can take the last commits with it): the note is looked up before
            # every post, so a version is in the ticket once whatever the database remembers.
            remote = await psa.find_posted(client, psa.Target(**target), packet.ticket_id, packet)
            if remote is not None:
                _DELIVERIES.labels(kind, "found").inc()
            else:
                remote = await psa.post(client, psa.Target(**target), tenant, packet.ticket_id, packet, page)
        except psa.DeliveryError as exc:
            give_up = not exc.retry or attempts >= self.max_attempts
            delay = min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1))
            failed = audit_event(
                service="packet",
                tenant_id=tenant,
                action="packet.note.failed",
                subject_kind="packet",
                subject_id=f"{packet.packet_id}:v{packet.version}",
                cause_id=f"{packet.packet_id}:v{packet.version}:failed",
                outcome="failed",
                details={"psa": kind, "attempts": attempts, "error": str(exc)[:500]},
            )
            await asyncio.to_thread(
                versions.finish_delivery,
                self.engine,
                row["packet_id"],
                row["version"],
                status="failed" if give_up else "pending",
                attempts=attempts,
                next_at=utcnow() + timedelta(seconds=delay),
                error=str(exc)[:1000],
                events=[failed] if give_up else [],
                namespace=self.namespace,
            )
            self.outbox.wake()
            _DELIVERIES.labels(kind, "failed" if give_up else "retry").inc()
            log.warning(
                "PSA note post failed",
                extra={"tenant_id": tenant, "psa": kind, "attempt": attempts, "error": str(exc)[:200]},
            )
            return 0
        posted = audit_event(
            service="packet",
            tenant_id=tenant,
            action="packet.note.posted",
            subject_kind="packet",
            subject_id=f"{packet.packet_id}:v{packet.version}",
            cause_id=f"{packet.packet_id}:v{packet.version}:posted",
            details={"psa": kind, "attempts": attempts, "remote_id": remote},
        )
        await asyncio.to_thread(
            versions.finish_delivery,
            self.engine,
            row["packet_id"],
            row["version"],
            status="posted",
            attempts=attempts,
            remote_id=remote,
            events=[posted],
            namespace=self.namespace,
        )
        self.outbox.wake()
        _DELIVERIES.labels(kind, "posted").inc()
        at = trigger_at if trigger_at.tzinfo else trigger_at.replace(tzinfo=UTC)
        _LATENCY.observe(max(0.0, (datetime.now(UTC) - at).total_seconds()))
        return 1
