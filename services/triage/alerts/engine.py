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
import json
import logging
import time
import uuid
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Engine

from libs.common.bus import EventProducer
from libs.common.embeddings import Embedder
from libs.common.events import AlertReceived, EventSource, SignalClustered
from services.triage.alerts import store
from services.triage.alerts.clusterer import ClusterConfig, TenantClusterer

log = logging.getLogger(__name__)

ALERTS_IN = Counter("msp_triage_alerts_total", "Alerts taken into clustering", ["status"])
SIGNALS_OPENED = Counter("msp_triage_signals_opened_total", "Signals opened")
SIGNAL_EVENTS = Counter("msp_triage_signal_events_total", "Signal revisions published", ["state"])
SIGNALS_OPEN = Gauge("msp_triage_signals_open", "Signals currently open, all tenants")
NOISE_REDUCTION = Gauge(
    "msp_triage_noise_reduction_ratio",
    "1 - signals opened / firing alerts taken in, since the process started",
)
CLUSTER_LATENCY = Histogram(
    "msp_triage_alert_to_signal_seconds",
    "From an alert's ingestion to the publication of the signal revision that holds it",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
SIGNAL_NAMESPACE = uuid.UUID("0e7d2b8a-3f0c-4d1e-9a6b-51c2d3e4f5a6")


class AlertClustering:
    def __init__(
        self,
        *,
        engine: Engine,
        producer: EventProducer,
        config: ClusterConfig,
        embedder: Embedder | None = None,
        correlation_flush_s: float = 5.0,
        sweep_every_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.config = config
        self.embedder = embedder
        self.correlation_flush_s = correlation_flush_s
        self.sweep_every_s = sweep_every_s
        self.tenants: dict[str, TenantClusterer] = {}
        self._last_event_wall: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._last_flush = time.monotonic()
        self._sweeper: asyncio.Task[None] | None = None
        self._firing_in = 0
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
        async with self._lock:
            await self._flush(force_correlations=True)

    async def forget_all(self) -> None:
        """Partitions were revoked: what we hold may now belong to another instance. The
        state is in the database; it is reloaded when a tenant's alerts come back."""
        async with self._lock:
            await self._flush(force_correlations=True)
            self.tenants.clear()

    # --- the batch ---------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> Any:
        assert self.embedder is not None
        return self.embedder.encode(texts)

    async def _tenant(self, tenant_id: str) -> TenantClusterer:
        c = self.tenants.get(tenant_id)
        if c is None:
            c = TenantClusterer(tenant_id, self.config, embed=self._embed if self.embedder else None)
            learned, live, ids = await asyncio.to_thread(
                store.load_tenant, self.engine, tenant_id, max_alert_ids=self.config.dedup_memory
            )
            c.restore(learned, live, ids)
            self.tenants[tenant_id] = c
        return c

    async def handle_batch(self, items: list[tuple[AlertReceived, Any]]) -> None:
        async with self._lock:
            ingested: dict[str, float] = {}
            touched: dict[str, TenantClusterer] = {}
            for event, _record in items:
                c = touched.get(event.tenant_id) or await self._tenant(event.tenant_id)
                touched[event.tenant_id] = c
                if c.add(event) is not None:
                    ingested[str(event.event_id)] = event.ingested_at.timestamp()
                    ALERTS_IN.labels(event.payload.status).inc()
                    if event.payload.status == "firing":
                        self._firing_in += 1
                self._last_event_wall[event.tenant_id] = time.time()
            for c in touched.values():
                if self.embeddings_ready:
                    c.merge_new_groups()
                else:
                    c._batch_seeds.clear()
                c.sweep(c.clock)
            await self._publish_and_store(touched.values(), ingested)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every_s)
            try:
                async with self._lock:
                    wall = time.time()
                    for tenant_id, c in self.tenants.items():
                        # The tenant's clock: its latest event time, moved on by the wall time
                        # since that event arrived.
                        c.sweep(c.clock + max(0.0, wall - self._last_event_wall.get(tenant_id, wall)))
                    await self._publish_and_store(self.tenants.values(), {})
            except Exception:  # noqa: BLE001 - the next tick tries again; the state is intact
                log.exception("sweep failed")

    async def _publish_and_store(self, tenants: Any, ingested: dict[str, float]) -> None:
        batch = store.BatchWrite()
        events: list[SignalClustered] = []
        member_added: list[tuple[str, float]] = []
        for c in tenants:
            before = set(c.signals)
            for sig, state, added in c.take_changes():
                payload = c.payload(sig, state, added)
                events.append(
                    SignalClustered(
                        event_id=uuid.uuid5(SIGNAL_NAMESPACE, f"{sig.signal_id}:{sig.revision}"),
                        tenant_id=c.tenant_id,
                        occurred_at=payload.last_seen,
                        source=EventSource(system="msp-triage", reference=sig.signal_id),
                        payload=payload,
                    )
                )
                SIGNAL_EVENTS.labels(state).inc()
                if state == "opened":
                    self._opened += 1
                    SIGNALS_OPENED.inc()
                batch.signals.append(
                    {
                        "signal_id": sig.signal_id,
                        "tenant_id": c.tenant_id,
                        "status": sig.status,
                        "revision": sig.revision,
                        "state": _json(sig.to_state()),
                    }
                )
                for aid in added:
                    batch.members.append(
                        {"tenant_id": c.tenant_id, "alert_id": aid, "signal_id": sig.signal_id}
                    )
                    if aid in ingested:
                        member_added.append((aid, ingested[aid]))
            batch.closed.extend(before - set(c.signals))
        if time.monotonic() - self._last_flush >= self.correlation_flush_s:
            self._collect_correlations(batch)
        if events:
            await self.producer.publish_many(events)
        if batch:
            await asyncio.to_thread(store.write, self.engine, batch)
        now = time.time()
        for _, t in member_added:
            CLUSTER_LATENCY.observe(max(0.0, now - t))
        SIGNALS_OPEN.set(
            sum(1 for c in self.tenants.values() for s in c.signals.values() if s.status == "open")
        )
        if self._firing_in:
            NOISE_REDUCTION.set(1 - self._opened / self._firing_in)

    def _collect_correlations(self, batch: store.BatchWrite) -> None:
        self._last_flush = time.monotonic()
        for tenant_id, c in self.tenants.items():
            if c.learner_dirty:
                batch.correlations[tenant_id] = c.learner_state()
                c.learner_dirty = False

    async def _flush(self, *, force_correlations: bool = False) -> None:
        batch = store.BatchWrite()
        if force_correlations:
            self._collect_correlations(batch)
        if batch:
            await asyncio.to_thread(store.write, self.engine, batch)

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
    return json.dumps(value, separators=(",", ":"), default=str)
