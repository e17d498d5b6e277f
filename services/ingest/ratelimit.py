"""Per-tenant rate limiting: a token bucket per tenant, counted in events (pure logic)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


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
