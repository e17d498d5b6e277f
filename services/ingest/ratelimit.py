"""Per-tenant rate limiting: a token bucket per tenant, counted in events. `RateLimiter` is the
bucket in one process (pure logic); `SharedRateLimiter` holds it across all ingest processes."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from services.ingest.tables import rate_buckets


class RateLimiter:
    def __init__(self, rate_eps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_eps
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, last refill)

    def take(self, tenant_id: str, cost: int) -> float:
        """Spend `cost` tokens; returns 0 when allowed, else the seconds to wait before retrying.

        A request larger than the burst is let through when the bucket is full, so a big batch
        is slowed down rather than refused forever.
        """
        now = self.clock()
        tokens, last = self._buckets.get(tenant_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        need = min(float(cost), float(self.burst))
        if tokens >= need:
            self._buckets[tenant_id] = (tokens - cost, now)
            return 0.0
        self._buckets[tenant_id] = (tokens, now)
        return max(0.001, (need - tokens) / self.rate)


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))


class SharedRateLimiter:
    """The same token bucket per tenant, held in the ingest database so that it holds across
    every ingest process: each process leases small chunks of tokens from the shared bucket
    (one short transaction per chunk) and spends them locally, so the hot path stays in
    memory and the tenant's rate is the configured one whichever processes its requests reach.
    What a process leased and did not spend is at most one chunk per tenant."""

    def __init__(
        self,
        engine: Engine,
        rate_eps: float,
        burst: int,
        *,
        lease: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.rate = rate_eps
        self.burst = burst
        self.lease = lease if lease is not None else max(1.0, min(burst * 0.05, rate_eps * 0.05))
        self.clock = clock
        self._local: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def take(self, tenant_id: str, cost: int) -> float:
        """As `RateLimiter.take`: 0 when allowed, else the seconds to wait."""
        need = min(float(cost), float(self.burst))
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            held = self._local.get(tenant_id, 0.0)
            if held >= need:
                self._local[tenant_id] = held - need
                return 0.0
            granted, wait = await asyncio.to_thread(self._lease_from_db, tenant_id, need - held)
            if wait:
                return wait
            self._local[tenant_id] = held + granted - need
            return 0.0

    def _lease_from_db(self, tenant_id: str, missing: float) -> tuple[float, float]:
        """Take `missing` tokens (and up to a lease more) from the shared bucket, refilled for
        the time since it was last touched. Returns (granted, 0) or (0, seconds to wait)."""
        now = self.clock()
        b = rate_buckets
        with self.engine.begin() as conn:
            query = select(b.c.tokens, b.c.updated_at).where(b.c.tenant_id == tenant_id)
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).first()
            tokens = (
                float(self.burst)
                if row is None
                else min(
                    float(self.burst), float(row.tokens) + max(0.0, now - float(row.updated_at)) * self.rate
                )
            )
            if tokens < missing:
                granted, wait = 0.0, max(0.001, (missing - tokens) / self.rate)
            else:
                granted, wait = min(tokens, missing + self.lease), 0.0
            values = {"tokens": tokens - granted, "updated_at": now}
            if row is None:
                dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
                conn.execute(
                    dialect.insert(b)
                    .values(tenant_id=tenant_id, **values)
                    .on_conflict_do_update(index_elements=["tenant_id"], set_=values)
                )
            else:
                conn.execute(update(b).where(b.c.tenant_id == tenant_id).values(**values))
        return granted, wait
