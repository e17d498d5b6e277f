"""The clustering engine inside the triage service: micro-batches of alerts from Kafka in,
signal revisions out, state in the database.

Per batch: each tenant's alerts go to that tenant's clusterer (loaded from the database the
first time the tenant is seen), new groups are looked for, quiet signals resolve, the changed
signals are published (one event per signal per batch), and the state is written. Only then
does the consumer commit the batch's offsets. A sweeper advances each tenant's clock between
batches so that a tenant that falls silent still has its signals resolve.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic_core
from prometheus_client import Counter, Gauge
from sqlalchemy import Engine

from libs.common import sla
from libs.common.audit import audit_event
from libs.common.bus import EventProducer, StateLost, unavailable, wait_for_dependency
from libs.common.embeddings import Embedder
from libs.common.events import AlertReceived, AuditEvent, EventSource, SignalClustered, SignalPayload
from services.triage.alerts import store
from services.triage.alerts.clusterer import Change, ClusterConfig, TenantClusterer
from services.triage.tickets.store import apply_signals

log = logging.getLogger(__name__)
_T = TypeVar("_T")

ALERTS_IN = Counter("msp_triage_alerts_total", "Alerts taken into clustering", ["status"])
SIGNALS_OPENED = Counter("msp_triage_signals_opened_total", "Signals opened")
SIGNAL_EVENTS = Counter("msp_triage_signal_events_total", "Signal revisions published", ["state"])
SIGNALS_OPEN = Gauge("msp_triage_signals_open", "Signals currently open, all tenants")
NOISE_REDUCTION = Gauge(
    "msp_triage_noise_reduction_ratio",
    "1 - signals opened / firing alerts taken in, since the process started",
)
_FIRING_IN = ALERTS_IN.labels("firing")
_RESOLVED_IN = ALERTS_IN.labels("resolved")
REVISION_NAMESPACE = uuid.UUID("0e7d2b8a-3f0c-4d1e-9a6b-51c2d3e4f5a6")


class AlertClustering:
    def __init__(
        self,
        *,
        engine: Engine,
        producer: EventProducer,
        config: ClusterConfig,
        embedder: Embedder | None = None,
        checkpoint_every_s: float = 5.0,
        sweep_every_s: float = 0.5,
        update_every_s: float = 1.0,
        grouping_every_s: float = 2.0,
        reserve_ahead: int = 64,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.config = config
        self.embedder = embedder
        self.checkpoint_every_s = checkpoint_every_s
        self.sweep_every_s = sweep_every_s
        self.update_every_s = update_every_s
        self.grouping_every_s = grouping_every_s
        # Revision numbers are reserved in blocks of this size (one database write per block
        # per signal); after a crash a signal's revisions continue after its block.
        self.reserve_ahead = reserve_ahead
        self._reserved: dict[str, int] = {}  # signal id -> highest revision number reserved
        self.tenants: dict[str, TenantClusterer] = {}
        self._last_event_wall: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.broken = False
        self.dependency_waits = 0  # times a batch waited for the database or the broker
        self._sweeper: asyncio.Task[None] | None = None
        self._firing_in = 0
        self._ingested: dict[str, float] = {}  # alert id -> ingestion time, until published
        self._opened = 0
        self.embeddings_ready = embedder is None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="triage-sweeper")
        if self.embedder is not None:
            asyncio.get_running_loop().run_in_executor(None, self._warm_up)

    def _warm_up(self) -> None:
        assert self.embedder is not None
        try:
            self.embedder.encode(["warm up"])
            self.embeddings_ready = True
        except Exception:  # noqa: BLE001 - clustering works without it; say so loudly
            log.exception("embedding model failed to load; new-group detection is off")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        await self.checkpoint()

    async def forget_all(self) -> None:
        """Partitions were revoked: what we hold may now belong to another instance. The
        consumer has just checkpointed; tenants are reloaded when their alerts come back."""
        async with self._lock:
            self.tenants.clear()

    # --- the batch ---------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> Any:
        assert self.embedder is not None
        return self.embedder.encode(texts)

    async def _tenant(self, tenant_id: str) -> TenantClusterer:
        c = self.tenants.get(tenant_id)
        if c is None:
            c = TenantClusterer(tenant_id, self.config, embed=self._embed if self.embedder else None)
            learned, live, reserved = await asyncio.to_thread(store.load_tenant, self.engine, tenant_id)
            c.restore(learned, live, reserved)
            self._reserved.update(reserved)
            self.tenants[tenant_id] = c
        return c

    async def handle_batch(self, items: list[tuple[AlertReceived, Any]]) -> None:
        """Take one poll's alerts in and publish the revisions they make due. What may wait for
        a dependency surrounds what cannot be undone: the tenants' state is loaded before any
        alert is applied, the revisions are published after (a publish that fails leaves them
        pending), so a database or broker outage is waited out with the state intact and the
        batch held (back-pressure), not turned into a restart."""
        if self.broken:
            raise StateLost("clustering state was abandoned after a failure; restart")
        async with self._lock:
            tenants = await self._waiting_out("loading tenant state", lambda: self._load(items))
            try:
                touched = self._take_in(items, tenants)
            except Exception as exc:
                # Half a batch is in memory: neither retrying it nor checkpointing is safe.
                # The consumer stops without committing; a restart reloads the checkpoint and
                # the uncommitted alerts come again.
                self.broken = True
                raise StateLost(f"alert batch failed half-way: {exc!r}") from exc
            await self._waiting_out("publishing signal revisions", lambda: self._publish(touched))

    async def _waiting_out(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """`call` until it succeeds, waiting (backing off up to 5 s) while the database or the
        broker is unavailable. Only for steps that leave the state as it was when they fail;
        any other failure gives the state up (`StateLost`: the process restarts from its
        checkpoint)."""
        wait = 0.1
        while True:
            try:
                return await call()
            except Exception as exc:
                if not unavailable(exc):
                    self.broken = True
                    raise StateLost(f"{what} failed: {exc!r}") from exc
                self.dependency_waits += 1
                wait = await wait_for_dependency("triage", exc, wait * 2, what)

    async def _load(self, items: list[tuple[AlertReceived, Any]]) -> dict[str, TenantClusterer]:
        out: dict[str, TenantClusterer] = {}
        for event, _record in items:
            if event.tenant_id not in out:
                out[event.tenant_id] = await self._tenant(event.tenant_id)
        return out

    def _take_in(
        self, items: list[tuple[AlertReceived, Any]], tenants: dict[str, TenantClusterer]
    ) -> list[TenantClusterer]:
        """Apply the alerts to their tenants' state (in memory only); the tenants touched."""
        firing_by_tenant = dict.fromkeys(tenants, 0)
        resolved = 0
        wall = time.time()
        for tenant_id in tenants:
            self._last_event_wall[tenant_id] = wall
        for event, _record in items:
            sig = tenants[event.tenant_id].add(event)
            if sig is not None:
                aid = str(event.event_id)
                self._ingested[aid] = event.ingested_at.timestamp()
                if event.payload.status == "firing":
                    firing_by_tenant[event.tenant_id] += 1
                else:
                    resolved += 1
        firing = sum(firing_by_tenant.values())
        self._firing_in += firing
        _FIRING_IN.inc(firing)
        _RESOLVED_IN.inc(resolved)
        for tenant_id, n in firing_by_tenant.items():
            if n:
                sla.ALERTS.labels(sla.tenant_label(tenant_id)).inc(n)
        for c in tenants.values():
            # New-group detection runs on micro-batches of a couple of seconds per tenant: the
            # signals opened since the last run.
            if wall - c.last_grouping >= self.grouping_every_s:
                c.last_grouping = wall
                c.merge_new_groups(enabled=self.embeddings_ready)
            c.sweep(c.clock)
        return list(tenants.values())

    async def _sweep_loop(self) -> None:
        ticks = 0
        while not self.broken:
            await asyncio.sleep(self.sweep_every_s)
            ticks += 1
            try:
                async with self._lock:
                    if ticks % 2 == 0:  # resolving quiet signals can wait a second
                        wall = time.time()
                        for tenant_id, c in self.tenants.items():
                            # The tenant's clock: its latest event time, moved on by the wall
                            # time since that event arrived.
                            c.sweep(c.clock + max(0.0, wall - self._last_event_wall.get(tenant_id, wall)))
                    # Revisions held back by the update interval go out on time.
                    await self._publish(self.tenants.values())
                if ticks % max(1, int(self.checkpoint_every_s / self.sweep_every_s)) == 0:
                    # What the sweeper changed (signals resolved while no alerts arrive).
                    await self.checkpoint()
            except Exception:  # noqa: BLE001 - the next tick tries again; the state is intact
                log.exception("sweep failed")

    async def _publish(self, tenants: Any) -> int:
        """Publish the signal revisions that are due. Their numbers are reserved in the
        database first, and they are marked published only once the producer has them: a
        crash or a broker error never reuses a revision number (nor its event id) for other
        content, and never loses what a revision was to say."""
        events: list[SignalClustered | AuditEvent] = []
        published: dict[str, list[str]] = {}  # tenant -> the alert ids its revisions announce
        context: list[tuple[str, dict[str, Any]]] = []  # signals opened, resolved or merged
        wall = time.time()
        due = [(c, c.due_changes(wall, self.update_every_s)) for c in tenants]
        due = [(c, changes) for c, changes in due if changes]
        if not due:
            return 0
        await self._reserve(due)
        for c, changes in due:
            for ch in changes:
                sig, state, added = ch.signal, ch.state, ch.added
                payload = c.payload(sig, state, added, ch.revision)
                events.append(
                    SignalClustered.model_construct(  # parts built valid; see TenantClusterer.payload
                        event_id=uuid.uuid5(REVISION_NAMESPACE, f"{sig.signal_id}:{ch.revision}"),
                        tenant_id=c.tenant_id,
                        occurred_at=payload.last_seen,
                        ingested_at=datetime.now(UTC),
                        source=EventSource.model_construct(
                            system="msp-triage", reference=sig.signal_id, link=None
                        ),
                        payload=payload,
                    )
                )
                if state != "updated":  # decisions are audited; growth is in the stream
                    events.append(self._audit(c.tenant_id, sig, state, added, ch.revision))
                    context.append((c.tenant_id, ticket_context(payload)))
                published.setdefault(c.tenant_id, []).extend(added)
        try:
            await self.producer.publish_many(events)
        except BaseException:
            for c, changes in due:
                c.not_published(changes)
            raise
        if context:
            # Tickets see a signal open, resolve or merge at once; growth waits for the
            # checkpoint, which writes every changed signal (and this again, should it fail).
            try:
                await asyncio.to_thread(apply_signals, self.engine, context)
            except Exception as exc:  # noqa: BLE001 - the checkpoint writes it
                log.warning("ticket context waits for the checkpoint", extra={"error": str(exc)[:200]})
        for c, changes in due:
            c.published(changes, wall)
            opened = 0
            for ch in changes:
                SIGNAL_EVENTS.labels(ch.state).inc()
                if ch.state == "opened":
                    opened += 1
            if opened:
                self._opened += opened
                SIGNALS_OPENED.inc(opened)
                sla.SIGNALS.labels(sla.tenant_label(c.tenant_id)).inc(opened)
        # Time to classify: from each alert's ingestion to the revision that holds it.
        now = time.time()
        ingested = self._ingested
        for tenant_id, added in published.items():  # one metric child per tenant, not per revision
            observe = sla.TIME_TO_CLASSIFY.labels(sla.tenant_label(tenant_id), "alert").observe
            for aid in added:
                t = ingested.pop(aid, None)
                if t is not None:
                    observe(max(0.0, now - t))
        if self._firing_in:
            NOISE_REDUCTION.set(1 - self._opened / self._firing_in)
        return len(events)

    async def _reserve(self, due: list[tuple[TenantClusterer, list[Change]]]) -> None:
        """Make sure every revision about to go out lies within its signal's reserved block,
        reserving the next block in the database where it does not."""
        rows: list[dict[str, Any]] = [
            {
                "signal_id": ch.signal.signal_id,
                "tenant_id": c.tenant_id,
                "reserved": ch.revision + self.reserve_ahead,
            }
            for c, changes in due
            for ch in changes
            if ch.revision > self._reserved.get(ch.signal.signal_id, 0)
        ]
        if rows:
            await asyncio.to_thread(store.reserve_revisions, self.engine, rows)
            for r in rows:
                self._reserved[r["signal_id"]] = r["reserved"]

    @staticmethod
    def _audit(tenant_id: str, sig: Any, state: str, added: list[str], revision: int) -> AuditEvent:
        cause = {"opened": added[0] if added else sig.signal_id, "merged": sig.merged_into or sig.signal_id}
        return audit_event(
            service="triage",
            tenant_id=tenant_id,
            action=f"triage.signal.{state}",
            subject_kind="signal",
            subject_id=sig.signal_id,
            cause_id=cause.get(state) or f"{sig.signal_id}:{revision}",
            details={
                "revision": revision,
                "alerts": sig.count,
                "devices": sorted(sig.devices)[:20],
                "grouped_by": sorted({r[0] for r in sig.reasons.values()}),
                "confidence": sig.confidence,
                **({"merged_into": sig.merged_into} if sig.merged_into else {}),
            },
        )

    def snapshot(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """The signals of a tenant held in memory (fresher than the last checkpoint)."""
        c = self.tenants.get(tenant_id)
        return {} if c is None else {sid: sig.to_state() for sid, sig in c.signals.items()}

    async def checkpoint(self) -> None:
        """Write every signal changed since the last checkpoint (published or not), the
        alert-to-signal rows and the learned correlations. The consumer calls this before it
        commits offsets, so the database is never behind what Kafka considers consumed."""
        if self.broken:
            return
        async with self._lock:
            batch = store.BatchWrite()
            for c in self.tenants.values():
                for sig in c.take_dirty():
                    batch.signals.append(
                        {
                            "signal_id": sig.signal_id,
                            "tenant_id": c.tenant_id,
                            "status": sig.status,
                            "revision": sig.revision,
                            "state": _json(sig.to_state()),
                        }
                    )
                    if sig.revision:  # published: tickets may see it, as its last revision says
                        state = {"open": "opened" if sig.revision <= 1 else "updated"}.get(
                            sig.status, sig.status
                        )
                        batch.context.append((c.tenant_id, ticket_context(c.payload(sig, state, []))))
                batch.closed.extend(c.take_forgotten())
            self._collect_correlations(batch)
            SIGNALS_OPEN.set(sum(c.open_count() for c in self.tenants.values()))
            if batch:
                await asyncio.to_thread(store.write, self.engine, batch)

    def _collect_correlations(self, batch: store.BatchWrite) -> None:
        for tenant_id, c in self.tenants.items():
            if c.learner_dirty:
                batch.correlations[tenant_id] = c.learner_state()
                c.learner_dirty = False

    # --- reads -------------------------------------------------------------------------

    def learned_links(self, tenant_id: str, limit: int = 20) -> list[dict[str, Any]]:
        c = self.tenants.get(tenant_id)
        if c is None:
            return []
        return [
            {"a": c.template_names[a], "b": c.template_names[b], "lift": round(lift, 2), "support": n}
            for a, b, lift, n in c.learner.strongest(limit)
        ]


def _json(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


def ticket_context(p: SignalPayload) -> dict[str, Any]:
    """What ticket triage reads of a published signal revision (`apply_signals`)."""
    return {
        "signal_id": str(p.signal_id),
        "revision": p.revision,
        "state": p.state,
        "title": p.title,
        "severity": p.severity,
        "devices": p.devices,
        "sites": p.sites,
        "last_seen": p.last_seen,
    }
