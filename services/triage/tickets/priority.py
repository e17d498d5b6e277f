"""How urgent a ticket is: from what is failing right now (open signals on its devices and
site), from words of breadth and urgency, and otherwise from the priorities the tenant's
engineers gave the most similar resolved cases.

Priorities are the tenant's own labels when they come from its history; the rules speak the
platform's scale (critical, high, medium, low).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

BREADTH = re.compile(
    r"\b(all users|everyone|whole (?:office|site|company|team)|entire (?:office|site|company)|"
    r"(?:site|office|production|server|network|internet|email) (?:is )?down|outage)\b",
    re.IGNORECASE,
)
URGENCY = re.compile(
    r"\b(urgent|urgently|asap|immediately|critical|cannot work|can't work|unable to work|blocked|"
    r"emergency|deadline today)\b",
    re.IGNORECASE,
)
MINOR = re.compile(
    r"\b(no rush|when you have time|low priority|not urgent|question|how do i|how to|nice to have)\b",
    re.IGNORECASE,
)
SEVERITY_RANK = {"critical": 4, "high": 3, "warning": 2, "low": 1, "info": 0}


@dataclass(frozen=True)
class PriorityCall:
    label: str
    confidence: float
    method: str  # "signals", "rules", "similar_cases" or "default"
    because: str
    evidence: tuple[str, ...]  # signal ids or ticket ids it rests on


def decide(
    text: str,
    open_signals: Sequence[tuple[str, str]],  # (signal id, severity) on the ticket's devices or site
    neighbours: Sequence[tuple[str, str | None, float]],  # (ticket id, its priority, similarity)
    *,
    min_votes: int = 3,
) -> PriorityCall:
    worst = max(open_signals, key=lambda s: SEVERITY_RANK.get(s[1], 0), default=None)
    if worst is not None and SEVERITY_RANK.get(worst[1], 0) >= SEVERITY_RANK["high"]:
        label = "critical" if worst[1] == "critical" else "high"
        ids = tuple(s for s, sev in open_signals if SEVERITY_RANK.get(sev, 0) >= SEVERITY_RANK["high"])
        because = (
            f"{len(ids)} open signal(s) of high or critical severity on its devices or site, worst {worst[1]}"
        )
        return PriorityCall(label, 0.8, "signals", because, ids)
    if m := BREADTH.search(text):
        return PriorityCall("critical", 0.7, "rules", f"reports breadth of impact ({m.group(0)!r})", ())
    if m := URGENCY.search(text):
        return PriorityCall("high", 0.6, "rules", f"says it is urgent ({m.group(0)!r})", ())
    voted = [(t, p, s) for t, p, s in neighbours if p and s > 0]
    if len(voted) >= min_votes:
        weights: dict[str, float] = {}
        for _, p, s in voted:
            weights[p] = weights.get(p, 0.0) + s
        best = max(weights, key=weights.__getitem__)
        share = weights[best] / sum(weights.values())
        ids = tuple(t for t, p, _ in voted if p == best)
        return PriorityCall(
            best, round(share, 4), "similar_cases", f"{len(ids)} of {len(voted)} similar cases had it", ids
        )
    if m := MINOR.search(text):
        return PriorityCall("low", 0.55, "rules", f"reads as minor ({m.group(0)!r})", ())
    return PriorityCall("medium", 0.4, "default", "no sign of urgency or breadth, no similar cases", ())
