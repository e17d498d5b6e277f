"""What an escalation packet says, from what the platform knows of the ticket: pure, no I/O.

Every part is a list of claims and every claim cites its sources (the ticket, its notes, the
signals and their alerts, a runbook section, similar resolved tickets). "Still unknown" lists
what the matching runbook asks to check, or the situation needs, that no note answers yet.
The summary here is extractive (sentences of the ticket and its notes, each with its source);
the service may replace it with Claude's, validated to cite the same sources.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from libs.common.events import Claim, Source, Unknown
from services.packet.kb.markdown import Section

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_STEP = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.+)$")
_WORD = re.compile(r"[a-z0-9]{3,}")
RUNBOOK_MIN_SCORE = 0.25  # best-section cosine under which a runbook is not offered


@dataclass(frozen=True)
class RunbookMatch:
    scope: str  # "tenant:<id>" or "global"
    path: str
    title: str
    url: str | None
    section: Section
    sections: tuple[Section, ...]
    score: float  # cosine of the query and the section


@dataclass(frozen=True)
class PacketParts:
    summary: list[Claim]
    related_alerts: list[Claim]
    runbook: list[Claim]
    already_tried: list[Claim]
    still_unknown: list[Unknown]
    similar_cases: list[Claim]
    sources: dict[str, Source]  # every source cited, by a short key (for the LLM summary)


def clip(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ticket_source(ticket: dict[str, Any], excerpt: str) -> Source:
    snap = ticket["snapshot"]
    return Source(kind="ticket", id=str(snap["ticket_id"]), url=snap.get("url"), excerpt=clip(excerpt))


def note_source(ticket: dict[str, Any], note: dict[str, Any]) -> Source:
    return Source(
        kind="note",
        id=f"{ticket['snapshot']['ticket_id']}/{note['note_id']}",
        url=ticket["snapshot"].get("url"),
        excerpt=clip(note["text"]),
    )


def runbook_source(m: RunbookMatch, section: Section | None = None) -> Source:
    section = section or m.section
    url = f"{m.url}#{section.anchor}" if m.url and section.anchor else m.url
    return Source(
        kind="runbook",
        id=f"{m.scope}:{m.path}#{section.anchor}" if section.anchor else f"{m.scope}:{m.path}",
        url=url,
        excerpt=clip(section.text),
    )


def build(
    ticket: dict[str, Any],
    signals: Sequence[dict[str, Any]],
    runbooks: Sequence[RunbookMatch],
    triage: dict[str, Any] | None,
    runs: Sequence[dict[str, Any]] = (),
) -> PacketParts:
    snap = ticket["snapshot"]
    notes = [n for n in ticket["notes"] if (n.get("text") or "").strip()]
    sources: dict[str, Source] = {}

    def cite(key: str, source: Source) -> Source:
        sources[key] = source
        return source

    # --- summary (extractive)
    summary: list[Claim] = []
    first = _SENTENCE.split((snap.get("description") or "").strip())[0] if snap.get("description") else ""
    what = f"{snap['title']}" + (f": {first}" if first else "")
    summary.append(
        Claim(text=clip(what, 600), confidence=0.95, sources=[cite("ticket", ticket_source(ticket, what))])
    )
    who = [x for x in (snap.get("requester"), snap.get("site")) if x]
    if who or snap.get("devices"):
        text = "Raised" + (f" by {snap['requester']}" if snap.get("requester") else "")
        text += f" at site {snap['site']}" if snap.get("site") else ""
        text += f", on {', '.join(snap['devices'])}" if snap.get("devices") else ""
        summary.append(Claim(text=clip(text + "."), confidence=0.95, sources=[sources["ticket"]]))
    for e in ticket["escalations"][-1:]:
        moves = [
            f"{label} {e.get(f'from_{k}') or '?'} to {e.get(f'to_{k}')}"
            for k, label in (("tier", "tier"), ("board", "board"), ("assignee", "assignee"))
            if e.get(f"to_{k}")
        ]
        if moves:
            summary.append(
                Claim(
                    text=clip("Escalated: " + "; ".join(moves) + "."),
                    confidence=0.95,
                    sources=[ticket_source(ticket, "escalation: " + "; ".join(moves))],
                )
            )
    if notes:
        last = notes[-1]
        src = cite(f"note:{last['note_id']}", note_source(ticket, last))
        summary.append(
            Claim(
                text=clip(
                    f"{len(notes)} note(s) so far; the latest: {_SENTENCE.split(last['text'].strip())[0]}"
                ),
                confidence=0.9,
                sources=[src],
            )
        )

    # --- related alerts
    related: list[Claim] = []
    for sig in sorted(signals, key=lambda s: (s.get("state") in ("resolved", "merged"), s["first_seen"])):
        state = {"opened": "open", "updated": "open"}.get(sig.get("state", ""), sig.get("state", ""))
        where = ", ".join(sig.get("devices") or sig.get("sites") or [])
        text = f"{sig['title']} ({sig['severity']}, {state}) on {where}: "
        text += f"{sig['count']} alert(s) since {sig['first_seen']}"
        srcs = [
            cite(
                f"signal:{sig['signal_id']}",
                Source(kind="signal", id=str(sig["signal_id"]), excerpt=clip(sig["title"])),
            )
        ]
        srcs += [
            Source(kind="alert", id=str(a), excerpt=clip(sig["title"])) for a in sig.get("alert_ids", [])[-3:]
        ]
        related.append(Claim(text=clip(text), confidence=float(sig.get("confidence", 0.8)), sources=srcs))
    if related:
        open_ = [s for s in signals if s.get("state") in ("opened", "updated")]
        summary.append(
            Claim(
                text=f"{len(open_)} open signal(s) on the ticket's devices or site.",
                confidence=0.9,
                sources=[sources[f"signal:{s['signal_id']}"] for s in (open_ or signals)][:5],
            )
        )

    # --- runbook sections
    runbook: list[Claim] = []
    offered = [m for m in runbooks if m.score >= RUNBOOK_MIN_SCORE][:2]
    for n, m in enumerate(offered):
        heading = m.section.heading or m.title
        conf = round(min(0.95, max(0.05, (m.score - 0.1) / 0.6)), 3)
        src = cite(f"runbook:{n}", runbook_source(m))
        runbook.append(
            Claim(text=clip(f"Runbook '{m.title}', section '{heading}'"), confidence=conf, sources=[src])
        )

    # --- already tried (the ticket's notes)
    tried = [
        Claim(
            text=clip(f"{n.get('author') or 'An engineer'} noted: {n['text']}"),
            confidence=0.9,
            sources=[note_source(ticket, n)],
        )
        for n in notes
    ]

    for run in runs:  # what the platform ran on the ticket
        results = {r["index"]: r for r in run.get("results", [])}
        for i, step in enumerate(run.get("steps", [])):
            r = results.get(i)
            outcome = r["outcome"] if r else ("pending" if run.get("outcome") is None else "not run")
            detail = (
                f": {r['error_class'] or ''} {r.get('message', '')}".rstrip()
                if r and r["outcome"] == "failed"
                else ""
            )
            params = ", ".join(f"{k}={v}" for k, v in step.get("params", {}).items())
            text = f"The platform ran {step['action']}({params}): {outcome}{detail}"
            source = Source(
                kind="execution", id=f"{run['run_id']}/{i}", url=run.get("logs_url"), excerpt=clip(text)
            )
            tried.append(Claim(text=clip(text), confidence=0.95, sources=[source]))

    # --- still unknown
    unknown: list[Unknown] = []
    said = set(_WORD.findall(" ".join(n["text"] for n in notes).lower()))
    if offered:
        best = offered[0]
        for sec in best.sections:
            if sec.heading.lower() not in (
                "diagnosis",
                "diagnose",
                "checks",
                "troubleshooting",
                "investigation",
            ):
                continue
            for step in _steps(sec.text)[:5]:
                words = set(_WORD.findall(step.lower()))
                if words and len(words & said) / len(words) < 0.5:
                    unknown.append(
                        Unknown(
                            text=clip(f"Not yet checked ({best.title}, {sec.heading}): {step}", 900),
                            missing_evidence="no note on the ticket reports this check",
                        )
                    )
    if not snap.get("devices"):
        unknown.append(
            Unknown(text="Which device is affected", missing_evidence="the ticket names no device")
        )
    elif not signals:
        unknown.append(
            Unknown(
                text=f"Whether monitoring sees a problem on {', '.join(snap['devices'])}",
                missing_evidence="no alerts from these devices around the ticket's time",
            )
        )
    if not offered:
        unknown.append(
            Unknown(
                text="Which runbook applies",
                missing_evidence="no runbook of the tenant or the global library matches",
            )
        )

    # --- similar cases (from triage: the same tenant's resolved tickets)
    similar: list[Claim] = []
    for case in (triage or {}).get("similar_cases", [])[:5]:
        how = case.get("resolution_summary") or "no resolution summary recorded"
        similar.append(
            Claim(
                text=clip(f"Ticket {case['ticket_id']} looked alike; resolved: {how}"),
                confidence=round(float(case["score"]), 3),
                sources=[
                    Source(kind="ticket", id=str(case["ticket_id"]), url=case.get("url"), excerpt=clip(how))
                ],
            )
        )
    return PacketParts(summary, related, runbook, tried, unknown, similar, sources)


def _steps(text: str) -> list[str]:
    """The steps a runbook section asks for: its list items, else its sentences."""
    items = [m.group(1).strip() for line in text.split("\n") if (m := _STEP.match(line))]
    if items:
        return items
    prose = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)
    return [s.strip() for s in _SENTENCE.split(" ".join(prose.split())) if len(s.strip()) > 15]
