"""CPU time of the processes a benchmark measures: the cost of a unit of work (an alert, an
escalation) as CPU seconds, which a busy or slow machine changes far less than it changes
latency under overload. Linux (`/proc`); elsewhere the figures are None."""

from __future__ import annotations

import os
from collections.abc import Iterable

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Iterable[int]) -> float | None:
    """User and system CPU seconds the processes have used so far (threads included)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                # The command name in parentheses may hold spaces: the fields follow its ")".
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return total


def per_unit(before: float | None, after: float | None, units: int, scale: float) -> float | None:
    """CPU used between the two readings per unit of work, times `scale` (1e3: ms, 1e6: us)."""
    if before is None or after is None or units <= 0:
        return None
    return round((after - before) / units * scale, 3)
