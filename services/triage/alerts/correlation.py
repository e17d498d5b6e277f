"""Learned correlation: which alert templates fire together on the same device or site more
often than chance, per tenant, updated online with every alert.

For each firing alert of template `a` at time t on a scope (a device, or a site), every distinct
template `b` seen on that scope within the window before t counts one co-occurrence of (a, b).
The link strength is the lift

    lift(a, b) = co(a, b) * N / (n(a) * n(b))

with N all alerts counted and n(x) those of template x. Lift 1 is what independent templates
give; a link needs lift >= `min_lift` over at least `min_support` co-occurrences. Nothing here
knows any data set's types: templates are whatever the alerts bring.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Scope:
    events: deque[tuple[float, int]] = field(default_factory=deque)
    present: dict[int, int] = field(default_factory=dict)  # template -> alerts in the window


class CorrelationLearner:
    def __init__(self, *, window_s: float = 1800.0, min_lift: float = 1.0, min_support: int = 5) -> None:
        self.window_s = window_s
        self.min_lift = min_lift
        self.min_support = min_support
        self.total = 0
        self.counts: dict[int, int] = {}
        self.co: dict[int, dict[int, int]] = {}
        self._scopes: dict[str, _Scope] = {}

    def observe(self, template: int, scopes: tuple[str, ...], t: float) -> None:
        """Count one firing alert of `template` seen at time `t` on the given scopes."""
        self.total += 1
        self.counts[template] = self.counts.get(template, 0) + 1
        seen: set[int] = set()
        for key in scopes:
            scope = self._scopes.get(key)
            if scope is None:
                scope = self._scopes[key] = _Scope()
            events, present = scope.events, scope.present
            horizon = t - self.window_s
            while events and events[0][0] < horizon:
                _, old = events.popleft()
                left = present[old] - 1
                if left:
                    present[old] = left
                else:
                    del present[old]
            seen.update(present)
            events.append((t, template))
            present[template] = present.get(template, 0) + 1
        if not seen:
            return
        row = self.co.setdefault(template, {})
        for other in seen:
            row[other] = row.get(other, 0) + 1
            if other != template:
                col = self.co.setdefault(other, {})
                col[template] = col.get(template, 0) + 1

    def lift(self, a: int, b: int) -> float:
        co = self.co.get(a, {}).get(b, 0)
        if co < self.min_support:
            return 0.0
        return co * self.total / (self.counts[a] * self.counts[b])

    def linked(self, a: int, b: int) -> bool:
        return a == b or self.lift(a, b) >= self.min_lift

    def strongest(self, limit: int = 20) -> list[tuple[int, int, float, int]]:
        """The strongest learned links (a, b, lift, support), for the operator's view."""
        out = []
        for a, row in self.co.items():
            for b, co in row.items():
                if a < b and co >= self.min_support:
                    out.append((a, b, self.lift(a, b), co))
        out.sort(key=lambda x: -x[2])
        return out[:limit]

    # --- persistence (the sliding windows are short-lived and are not kept) -------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "counts": {str(k): v for k, v in self.counts.items()},
            "co": {str(a): {str(b): n for b, n in row.items()} for a, row in self.co.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.total = int(state.get("total", 0))
        self.counts = {int(k): int(v) for k, v in state.get("counts", {}).items()}
        self.co = {int(a): {int(b): int(n) for b, n in row.items()} for a, row in state.get("co", {}).items()}
