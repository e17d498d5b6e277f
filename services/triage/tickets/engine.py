"""Ticket triage in the running service: ticket events in, `tickets.triaged.v1` out.

- A new ticket, or one whose text changed, is classified (category, intent, priority), given
  its client context (site, requester, devices and the open signals on them) and its most
  similar resolved cases of the same tenant. Under the confidence threshold the local path
  abstains; with Claude configured, Claude is asked first, with the candidates and the similar
  cases, and its answer is validated against the tenant's categories.
- A ticket resolved or closed with a category joins its tenant's case memory at once (and the
  tenant's model is retrained in the background as the history grows).
- A category set by an engineer after triage is a review: a correction when it differs from
  what triage said. Corrections and confidence feed the drift gauges.
- The rollout mode of the tenant (and category) decides what the result is for: `off` (not
  published), `shadow` (published marked shadow, for the record and the audit: shown to
  nobody), `suggest`, or `auto` (a PSA writer may set the category above the threshold).

Open signals come from `signals.clustered.v1`, consumed in the same group as the tickets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import Counter, Histogram
from sqlalchemy import Engine

from libs.common import sla
from libs.common.audit import AuditEmitter, audit_event
from libs.common.bus import EventProducer
from libs.common.embeddings import Embedder
from libs.common.events import (
    Claim,
    ClientContext,
    Decision,
    EventSource,
    OpenSignal,
    Source,
    TicketEvent,
    TicketSnapshot,
    TicketTriaged,
    TicketTriagedPayload,
    derive_event_id,
    utcnow,
)
from libs.common.outbox import OutboxRelay
from libs.common.reasoning import (
    Candidate,
    ClassifyInput,
    ClassifyOutput,
    Evidence,
    Reasoning,
    audit_fallback,
)
from libs.common.telemetry import consumer_context
from services.triage.tickets import store
from services.triage.tickets.intents import CATALOGUE, Intent, IntentMatcher
from services.triage.tickets.learning import CaseMemory
from services.triage.tickets.model import TicketClassifier
from services.triage.tickets.review import Reviews
from services.triage.tickets.triager import (
    TicketTriager,
    Triage,
    TriageConfig,
    ticket_text,
)

log = logging.getLogger(__name__)

# A new or changed ticket is classified again when its text changed; other events classify a
# ticket only when triage has not seen it yet (their snapshots are often partial).
RECLASSIFY_KINDS = {"created", "updated", "reopened"}
LEARN_KINDS = {"resolved", "closed"}
MODES = ("off", "shadow", "suggest", "auto")

_SECONDS = Histogram(
    "msp_triage_ticket_classify_seconds",
    "Time to classify a ticket on the local path (embedding included)",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5),
)
_CONFIDENCE = Histogram(
    "msp_triage_ticket_confidence",
    "Category confidence of triaged tickets",
    ["method"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)
_DECISIONS = Counter("msp_triage_tickets_triaged_total", "Tickets triaged", ["method", "mode"])
_SPAN_ATTRS = {"messaging.system": "kafka", "msp.service": "triage"}
_OFF = Counter("msp_triage_ticket_off_total", "Tickets classified into a category whose rollout mode is off")
_ABSTAINED = Counter("msp_triage_ticket_abstentions_total", "Tickets left for a human to categorise")


def text_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).lower().encode()).hexdigest()


def local_path(
    embedder: Embedder, config: TriageConfig, global_corpus: tuple[list[str], list[str]] | None = None
) -> tuple[TicketTriager, IntentMatcher]:
    """The triager with its global model, and the shipped intent catalogue's matcher.

    The global model learns from global material only: the catalogue's examples (labelled with
    each intent's category) and the operator's global corpus, never a tenant's tickets."""
    texts = [e for i in CATALOGUE for e in i.examples]
    labels = [i.category for i in CATALOGUE for _ in i.examples]
    if global_corpus is not None:
        texts += global_corpus[0]
        labels += global_corpus[1]
    model = TicketClassifier().fit(texts, labels, embedder.encode(texts))
    return TicketTriager(config, model), IntentMatcher(CATALOGUE, embedder.encode)


class TicketTriage:
    def __init__(
        self,
        *,
        engine: Engine,
        producer: EventProducer,
        audit: AuditEmitter,
        embedder: Embedder,
        config: TriageConfig,
        reasoning: Reasoning | None = None,
        global_corpus: tuple[list[str], list[str]] | None = None,
        drift_window: int = 200,
        namespace: str = "",
    ) -> None:
        self.engine = engine
        self.namespace = namespace
        # Triage results and their audits leave through the outbox, written with the decision.
        self.outbox = OutboxRelay(engine, store.outbox, producer, "triage")
        self.producer = producer
        self.audit = audit
        self.embedder = embedder
        self.config = config
        self.reasoning = reasoning  # asked when the local path is unsure (Claude, if configured)
        self.global_corpus = global_corpus
        self.triager: TicketTriager | None = None
        self._ready = asyncio.Event()
        self._lock = threading.Lock()  # case memory and models: event loop vs worker threads
        self.memory = CaseMemory(engine=engine, embedder=embedder, config=config, lock=self._lock)
        self.reviews = Reviews(engine=engine, audit=audit, window=drift_window)
        self._matchers: dict[str, tuple[str, IntentMatcher]] = {}
        self._prepare: asyncio.Task[None] | None = None
        self.failed: str | None = None  # why ticket triage cannot work, if it cannot

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.failed is None

    async def start(self) -> None:
        await self.outbox.start()
        self._prepare = asyncio.create_task(self._build_global())

    async def _build_global(self) -> None:
        started = time.perf_counter()
        try:
            triager, matcher = await asyncio.to_thread(self._global_parts)
        except Exception as exc:
            # Without the global model nothing can be triaged: say so, stay unready, and let the
            # consumer fail (the process exits for its supervisor) instead of waiting forever.
            self.failed = f"the global ticket model could not be built: {exc!r}"
            log.error(self.failed, exc_info=exc)
            self._ready.set()
            return
        self.triager = self.memory.triager = triager
        self._matchers[""] = ("", matcher)
        self._ready.set()
        log.info("ticket triage ready", extra={"seconds": round(time.perf_counter() - started, 1)})

    def _global_parts(self) -> tuple[TicketTriager, IntentMatcher]:
        return local_path(self.embedder, self.config, self.global_corpus)

    async def stop(self) -> None:
        if self._prepare is not None:
            self._prepare.cancel()
        await self.memory.stop()
        await self.outbox.stop()

    def forget_all(self) -> None:
        """Partitions moved: drop what is cached per tenant (the database has it all)."""
        with self._lock:
            self.memory.forget()

    async def on_revoke(self) -> None:
        self.forget_all()

    # --- the stream -------------------------------------------------------------------------

    async def handle_batch(self, items: list[tuple[Any, Any]]) -> None:
        """Each ticket event in its own trace (what it publishes carries that trace on, not
        the batch's first event's). The open signals a ticket is seen against are written by
        alert clustering at its checkpoints (`store.apply_signals`), not consumed here."""
        await self._ready.wait()
        if self.failed is not None:
            raise RuntimeError(self.failed)
        for event, record in items:
            if isinstance(event, TicketEvent):
                with consumer_context("triage ticket", record.headers, _SPAN_ATTRS):
                    await self._ticket(event)

    async def _ticket(self, event: TicketEvent) -> None:
        tenant, ticket = event.tenant_id, event.payload.ticket
        await self.memory.load(tenant)
        prior = await asyncio.to_thread(store.last_decision, self.engine, tenant, ticket.ticket_id)
        if prior is not None and ticket.category:
            await self.reviews.review(event, prior)
        if event.payload.kind in LEARN_KINDS and ticket.category:
            await self.memory.learn(event)
            return
        text = ticket_text(ticket)
        digest = text_hash(text)
        if prior is None or (event.payload.kind in RECLASSIFY_KINDS and prior["text_hash"] != digest):
            await self._classify(event, text, digest)

    # --- classifying ------------------------------------------------------------------------

    async def _classify(self, event: TicketEvent, text: str, digest: str) -> None:
        tenant, ticket = event.tenant_id, event.payload.ticket
        stored = await asyncio.to_thread(store.rollout_modes, self.engine, tenant)
        modes = {"*": (self.config.default_mode, self.config.auto_threshold), **stored}
        if all(m == "off" for m, _ in modes.values()):
            return  # nothing would use the result: compute nothing
        started = time.perf_counter()
        vector = (await asyncio.to_thread(self.embedder.encode, [text]))[0]
        signals = await asyncio.to_thread(
            store.signals_near, self.engine, tenant, ticket.devices, ticket.site
        )
        matcher = await self._matcher(tenant)
        result = await asyncio.to_thread(self.classify_now, tenant, ticket, vector, matcher, signals)
        _SECONDS.observe(time.perf_counter() - started)
        category = result.category
        if category.label is None and self.reasoning is not None and self.reasoning.claude is not None:
            category = await self._ask_claude(event, result)
        mode, threshold = modes.get(category.label or "*", modes["*"])
        if mode == "off":
            # Off for this category: the ticket was classified only to learn that; nothing is
            # stored, published or audited.
            _OFF.inc()
            return
        payload = TicketTriagedPayload(
            ticket_id=ticket.ticket_id,
            category=category,
            intent=result.intent,
            priority=result.priority,
            similar_cases=result.similar_cases,
            open_signal_ids=[s["signal_id"] for s in signals],
            rollout_mode=mode,  # type: ignore[arg-type]
            needs_human=category.label is None,
            context=ClientContext(
                site=ticket.site,
                requester=ticket.requester,
                devices=ticket.devices,
                open_signals=[OpenSignal(**s) for s in signals],
            ),
            apply_category=mode == "auto" and category.label is not None and category.confidence >= threshold,
        )
        triaged = TicketTriaged(
            event_id=derive_event_id(tenant, "triaged", str(event.event_id)),
            tenant_id=tenant,
            occurred_at=utcnow(),
            source=EventSource(system="msp.triage", reference=ticket.ticket_id, link=ticket.url),
            payload=payload,
        )
        classified = audit_event(
            service="triage",
            tenant_id=tenant,
            action="triage.ticket.classified",
            subject_kind="ticket",
            subject_id=ticket.ticket_id,
            cause_id=str(event.event_id),
            details={
                "category": category.label,
                "confidence": category.confidence,
                "method": category.method,
                "intent": result.intent.label,
                "priority": result.priority.label,
                "mode": mode,
                "shown": mode in ("suggest", "auto"),
            },
        )
        await asyncio.to_thread(
            store.save_decision,
            self.engine,
            {
                "tenant_id": tenant,
                "ticket_id": ticket.ticket_id,
                "text_hash": digest,
                "input_category": ticket.category,
                "label": category.label,
                "confidence": category.confidence,
                "method": category.method,
                "mode": mode,
                "final_category": None,
                "corrected": False,
                "result": triaged.model_dump_json(),
                "event_id": str(triaged.event_id),
            },
            [triaged, classified],
            self.namespace,
        )
        self.outbox.wake()
        sla.TIME_TO_CLASSIFY.labels(sla.tenant_label(tenant), "ticket").observe(
            max(0.0, time.time() - event.ingested_at.timestamp())
        )
        _DECISIONS.labels(category.method.split(":")[0], mode).inc()
        _CONFIDENCE.labels(category.method.split(":")[0]).observe(category.confidence)
        if category.label is None:
            _ABSTAINED.inc()
        self.reviews.decided(tenant, category.confidence)

    def classify_now(
        self,
        tenant: str,
        ticket: TicketSnapshot,
        vector: np.ndarray,
        matcher: IntentMatcher,
        signals: Sequence[dict[str, Any]] = (),
    ) -> Triage:
        """The local decision (CPU only, thread-safe): what `msp eval tickets` measures too."""
        assert self.triager is not None
        with self._lock:
            return self.triager.classify(
                tenant, ticket, vector, matcher, [(str(s["signal_id"]), s["severity"]) for s in signals]
            )

    async def _matcher(self, tenant: str) -> IntentMatcher:
        own = await asyncio.to_thread(store.tenant_intents, self.engine, tenant)
        if not own:
            return self._matchers[""][1]
        key = json.dumps(own, sort_keys=True)
        cached = self._matchers.get(tenant)
        if cached is not None and cached[0] == key:
            return cached[1]
        extra = [
            Intent(
                i["name"], i["description"], i["category"], tuple(i["keywords"]), tuple(i["examples"]), tenant
            )
            for i in own
        ]
        overridden = {i.name for i in extra}
        intents = [i for i in CATALOGUE if i.name not in overridden] + extra
        matcher = await asyncio.to_thread(IntentMatcher, intents, self.embedder.encode)
        self._matchers[tenant] = (key, matcher)
        return matcher

    async def _ask_claude(self, event: TicketEvent, result: Triage) -> Decision:
        """The local path abstained: ask Claude, whose answer must name one of the tenant's
        categories and cite only the similar cases it was given; else the abstention stands."""
        assert self.reasoning is not None and self.triager is not None
        tenant, ticket = event.tenant_id, event.payload.ticket
        with self._lock:
            own = self.triager.cases(tenant).model
            known = sorted(str(c) for c in (own or self.triager.global_model).classes_)
        scores = dict(result.candidates)
        cases = {c.ticket_id: c for c, _ in result.neighbours[: self.config.similar_k]}
        question = ClassifyInput(
            text=f"{ticket.title}\n{ticket.description[:4000]}",
            candidates=[
                Candidate(label=c, description=f"the local model's score: {scores[c]}" if c in scores else "")
                for c in known
            ],
            context=[
                Evidence(
                    key=c.ticket_id, kind="ticket", id=c.ticket_id, excerpt=f"[{c.category}] {c.text[:600]}"
                )
                for c in cases.values()
            ],
        )
        fell_back = audit_fallback(
            self.audit,
            tenant_id=tenant,
            subject_kind="ticket",
            subject_id=ticket.ticket_id,
            cause_id=str(event.event_id),
        )
        answer = await self.reasoning.ask_claude("classify", tenant, question, on_fallback=fell_back)
        if not isinstance(answer, ClassifyOutput):
            return result.category
        sources = [
            Source(kind="ticket", id=t, url=cases[t].url, excerpt=cases[t].text[:300])
            for t in answer.evidence
        ] or [Source(kind="ticket", id=ticket.ticket_id, url=ticket.url, excerpt=ticket.title)]
        return Decision(
            label=answer.label,
            confidence=answer.confidence,
            method="claude",
            rationale=Claim(text=answer.rationale, confidence=answer.confidence, sources=sources),
        )

    # --- reads for the API ------------------------------------------------------------------

    def status(self, tenant: str) -> dict[str, Any]:
        if self.triager is None:
            return {"tenant_id": tenant, "ready": False}
        with self._lock:
            cases = self.triager.tenants.get(tenant)
            if cases is None:
                return {"tenant_id": tenant, "ready": True, "loaded": False}
            return {
                "tenant_id": tenant,
                "ready": True,
                "loaded": True,
                "cases": len(cases),
                "categories": cases.categories(),
                "model": "tenant_model" if cases.model is not None else "global_model",
                "trained_on": cases.trained_on,
                "training": cases.training,
            }
