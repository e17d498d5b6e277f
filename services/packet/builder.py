"""What an escalation packet says, from what the platform knows of the ticket: pure, no I/O.

Every part is a list of claims and every claim cites its sources (the ticket, its notes, the
signals and their alerts, a runbook section, similar resolved tickets). "Still unknown" lists
what the matching runbook asks to check, or the situation needs, that no note answers yet.
The summary here is extractive (sentences of the ticket and its notes, each with its source);
the service may replace it with Claude's, validated to cite the same sources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from pydantic import TypeAdapter

from libs.common.events import Claim, Source, TicketNote, TicketSnapshot, Unknown
from services.packet.kb.markdown import Section
from services.packet.known import KnownSignal, KnownTicket

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_STEP = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.+)$")
_WORD = re.compile(r"[a-z0-9]{3,}")
RUNBOOK_MIN_SCORE = 0.25  # best-section cosine under which a runbook is not offered

# Whether each check (first list) is answered by any of the note sentences (second list).
CheckMatcher = Callable[[Sequence[str], Sequence[str]], list[bool]]


@dataclass(frozen=True)
class Links:
    """Where the platform's own pages of a packet's sources are: the packet page (the ticket
    and its notes when the PSA gave no link), the signal API of triage, the runbook pages of
    the knowledge base. Links carry no credentials: the page signs them when it shows them."""

    tenant_id: str
    packet_base: str | None = None  # the packet service, e.g. http://127.0.0.1:8083
    triage_base: str | None = None  # the triage service

    def packet_page(self, packet_id: str, anchor: str) -> str | None:
        if not self.packet_base:
            return None
        query = urlencode({"tenant_id": self.tenant_id})
        return f"{self.packet_base.rstrip('/')}/v1/packets/{packet_id}/page?{query}#{anchor}"

    def signal(self, signal_id: str) -> str | None:
        if not self.triage_base:
            return None
        query = urlencode({"tenant_id": self.tenant_id})
        return f"{self.triage_base.rstrip('/')}/v1/signals/{signal_id}?{query}"

    def runbook(self, scope: str, path: str, anchor: str | None) -> str | None:
        if not self.packet_base:
            return None
        query = {"tenant_id": self.tenant_id, "path": path}
        if scope == "global":
            query["scope"] = "global"
        url = f"{self.packet_base.rstrip('/')}/v1/kb/runbooks/page?{urlencode(query, quote_via=quote)}"
        return f"{url}#{anchor}" if anchor else url


def anchor_of(kind: str, ident: str) -> str:
    """The id of a ticket's or note's element on the packet page."""
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_-]", "_", ident)[:100]


def lexical_matcher(checks: Sequence[str], sentences: Sequence[str]) -> list[bool]:
    """A check counts as answered when at least half of its words were written in a note: the
    fallback when no embedding model is at hand."""
    said = set(_WORD.findall(" ".join(sentences).lower()))
    out = []
    for check in checks:
        words = set(_WORD.findall(check.lower()))
        out.append(bool(words) and len(words & said) / len(words) >= 0.5)
    return out


@dataclass(frozen=True)
class RunbookMatch:
    scope: str  # "tenant:<id>" or "global"
    path: str
    title: str
    url: str | None
    section: Section
    sections: tuple[Section, ...]
    score: float  # cosine of the query and the section
    named: bool = False  # its title is the rule name of an alert involved


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


def ticket_source(
    ticket: KnownTicket, excerpt: str, links: Links | None = None, packet_id: str = ""
) -> Source:
    url = ticket.snapshot.url or (links and links.packet_page(packet_id, "ticket"))
    return Source(kind="ticket", id=ticket.snapshot.ticket_id, url=url, excerpt=clip(excerpt))


def note_source(
    ticket: KnownTicket, note: TicketNote, links: Links | None = None, packet_id: str = ""
) -> Source:
    # The PSA's ticket page holds its notes; without one, the note on the packet page.
    url = ticket.snapshot.url or (links and links.packet_page(packet_id, anchor_of("note", note.note_id)))
    return Source(
        kind="note", id=f"{ticket.snapshot.ticket_id}/{note.note_id}", url=url, excerpt=clip(note.text)
    )


def runbook_source(m: RunbookMatch, section: Section | None = None, links: Links | None = None) -> Source:
    section = section or m.section
    if m.url:
        url: str | None = f"{m.url}#{section.anchor}" if section.anchor else m.url
    else:
        url = links.runbook(m.scope, m.path, section.anchor or None) if links else None
    return Source(
        kind="runbook",
        id=f"{m.scope}:{m.path}#{section.anchor}" if section.anchor else f"{m.scope}:{m.path}",
        url=url,
        excerpt=clip(section.text),
    )


# How a signal relates to the ticket, closest first, and how sure that makes the packet that
# the signal bears on it: an alert on the ticket's own device, on a device the ticket's device
# feeds (the clustering's topology link names it), or only somewhere else at the same site.
_RELATIONS = ("device", "topology", "site", "other")
RELATION_CONFIDENCE = {"device": 0.9, "topology": 0.7, "site": 0.35, "other": 0.2}


def _iso(moment: datetime) -> str:
    """A time as the event JSON writes it (UTC as `Z`), so claim texts read as they always did."""
    return str(_TIME.dump_python(moment, mode="json"))


_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def touches(
    devices: Iterable[str], site: str | None, signal_devices: Iterable[str], signal_sites: Iterable[str]
) -> bool:
    """Whether a signal concerns a ticket: it shares one of the ticket's devices, or the
    ticket's site. The one rule for both directions (a signal refreshing the packets of the
    tickets it touches, and a packet gathering the signals around its ticket)."""
    return bool(set(devices) & set(signal_devices)) or (bool(site) and site in set(signal_sites))


def relation(sig: KnownSignal, snap: TicketSnapshot) -> tuple[str, str]:
    """(kind, how it reads) of a signal's relation to a ticket's snapshot."""
    devices = [d for d in snap.devices if d]
    same = sorted(set(devices) & set(sig.devices))
    if same:
        return "device", f"the ticket's device {', '.join(same)}"
    for reason in sig.reasons:
        if reason.feature == "topology":
            upstream = [
                d for d in devices if re.search(rf"(?<![\w.-]){re.escape(d)}(?![\w.-])", reason.detail)
            ]
            if upstream:
                return "topology", f"downstream of the ticket's device {', '.join(upstream)}"
    site = snap.site
    if site and site in sig.sites:
        return "site", f"another device at the ticket's site {site}"
    return "other", "near the ticket's time"


# What a runbook section is for, from its heading: the common runbook headings (Meaning,
# Impact, Diagnosis, Mitigation...) and their usual synonyms.
_ROLES = {
    "diagnose": ("diagnos", "check", "troubleshoot", "investigat", "triage", "verify"),
    "act": (
        "mitigat",
        "resolution",
        "resolve",
        "remediat",
        "fix",
        "workaround",
        "recover",
        "procedure",
        "steps",
        "solution",
        "action",
    ),
    "describe": (
        "meaning",
        "impact",
        "summary",
        "description",
        "overview",
        "about",
        "background",
        "symptom",
        "context",
    ),
}


def section_role(heading: str) -> str | None:
    words = heading.lower()
    for role, stems in _ROLES.items():
        if any(stem in words for stem in stems):
            return role
    return None


def next_step_section(m: RunbookMatch, *, checks_open: bool) -> Section:
    """The section to point the engineer at: the diagnosis while its checks are not all reported
    done, else what to do about it; the best-matching section when the runbook has neither."""
    by_role: dict[str, Section] = {}
    for sec in m.sections:
        role = section_role(sec.heading)
        if role is not None and sec.text.strip():
            by_role.setdefault(role, sec)
    order = ("diagnose", "act") if checks_open else ("act", "diagnose")
    for role in order:
        if role in by_role:
            return by_role[role]
    return m.section


def build(
    ticket: KnownTicket,
    signals: Sequence[KnownSignal],
    runbooks: Sequence[RunbookMatch],
    triage: dict[str, Any] | None,
    runs: Sequence[dict[str, Any]] = (),
    *,
    links: Links | None = None,
    answered: CheckMatcher = lexical_matcher,
    packet_id: str = "",
) -> PacketParts:
    """`packet_id` makes links to the packet page; `answered` decides which runbook checks the
    notes already answer (by meaning, when the service has its embedding model)."""
    snap = ticket.snapshot
    notes = [n for n in ticket.notes if n.text.strip()]
    sources: dict[str, Source] = {}

    def cite(key: str, source: Source) -> Source:
        sources[key] = source
        return source

    # --- summary (extractive)
    summary: list[Claim] = []
    first = _SENTENCE.split(snap.description.strip())[0] if snap.description else ""
    what = snap.title + (f": {first}" if first else "")
    summary.append(
        Claim(
            text=clip(what, 600),
            confidence=0.95,
            sources=[cite("ticket", ticket_source(ticket, what, links, packet_id))],
        )
    )
    who = [x for x in (snap.requester, snap.site) if x]
    if who or snap.devices:
        text = "Raised" + (f" by {snap.requester}" if snap.requester else "")
        text += f" at site {snap.site}" if snap.site else ""
        text += f", on {', '.join(snap.devices)}" if snap.devices else ""
        summary.append(Claim(text=clip(text + "."), confidence=0.95, sources=[sources["ticket"]]))
    for e in ticket.escalations[-1:]:
        moves = [
            f"{k} {getattr(e, f'from_{k}') or '?'} to {getattr(e, f'to_{k}')}"
            for k in ("tier", "board", "assignee")
            if getattr(e, f"to_{k}")
        ]
        if moves:
            summary.append(
                Claim(
                    text=clip("Escalated: " + "; ".join(moves) + "."),
                    confidence=0.95,
                    sources=[ticket_source(ticket, "escalation: " + "; ".join(moves), links, packet_id)],
                )
            )
    if notes:
        last = notes[-1]
        src = cite(f"note:{last.note_id}", note_source(ticket, last, links, packet_id))
        summary.append(
            Claim(
                text=clip(
                    f"{len(notes)} note(s) so far; the latest: {_SENTENCE.split(last.text.strip())[0]}"
                ),
                confidence=0.9,
                sources=[src],
            )
        )

    # --- related alerts: how each signal relates to the ticket decides its rank and confidence
    related: list[Claim] = []
    ranked = sorted(
        ((relation(sig, snap), sig) for sig in signals),
        key=lambda rs: (
            _RELATIONS.index(rs[0][0]),
            rs[1].ended,
            rs[1].first_seen,
        ),
    )
    for (kind, how), sig in ranked:
        state = {"opened": "open", "updated": "open"}.get(sig.state, sig.state)
        where = ", ".join(sig.devices or sig.sites)
        text = f"{sig.title} ({sig.severity}, {state}) on {where}, {how}: "
        text += f"{sig.count} alert(s) since {_iso(sig.first_seen)}"
        signal_url = links.signal(str(sig.signal_id)) if links else None
        srcs = [
            cite(
                f"signal:{sig.signal_id}",
                Source(kind="signal", id=str(sig.signal_id), url=signal_url, excerpt=clip(sig.title)),
            )
        ]
        srcs += _alert_sources(sig, snap, signal_url)
        # How sure the packet is that the signal bears on the ticket: the relation, lowered for a
        # signal that has already ended (it may be what happened before, not what is happening).
        confidence = RELATION_CONFIDENCE[kind] * (0.8 if state in ("resolved", "merged") else 1.0)
        related.append(Claim(text=clip(text), confidence=round(confidence, 3), sources=srcs))
    if related:
        open_ = [s for s in signals if not s.ended]
        summary.append(
            Claim(
                text=f"{len(open_)} open signal(s) on the ticket's devices or site.",
                confidence=0.9,
                sources=[sources[f"signal:{s.signal_id}"] for s in (open_ or signals)][:5],
            )
        )

    # --- runbook sections: the section that helps the next step (the checks not yet reported,
    # else what to do), not the one that merely reads most like the ticket
    runbook: list[Claim] = []
    # A runbook the alert's own rule names is offered whatever its text's similarity says.
    offered = [m for m in runbooks if m.named or m.score >= RUNBOOK_MIN_SCORE][:2]
    said = [sentence for n in notes for sentence in note_sentences(n.text)]
    open_checks: list[tuple[str, str]] = []
    for n, m in enumerate(offered):
        checks = [
            (sec.heading, step)
            for sec in m.sections
            if section_role(sec.heading) == "diagnose"
            for step in _steps(sec.text)[:5]
        ]
        done = answered([step for _, step in checks], said) if checks and said else [False] * len(checks)
        unchecked = [c for c, d in zip(checks, done, strict=True) if not d]
        if n == 0:
            open_checks = unchecked
        section = next_step_section(m, checks_open=bool(unchecked))
        heading = section.heading or m.title
        conf = 0.95 if m.named else round(min(0.95, max(0.05, (m.score - 0.1) / 0.6)), 3)
        src = cite(f"runbook:{n}", runbook_source(m, section, links=links))
        runbook.append(
            Claim(text=clip(f"Runbook '{m.title}', section '{heading}'"), confidence=conf, sources=[src])
        )

    # --- already tried (the ticket's notes)
    tried = [
        Claim(
            text=clip(f"{n.author or 'An engineer'} noted: {n.text}"),
            confidence=0.9,
            sources=[note_source(ticket, n, links, packet_id)],
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
    if offered:
        best = offered[0]
        for heading, step in open_checks:
            unknown.append(
                Unknown(
                    text=clip(f"Not yet checked ({best.title}, {heading}): {step}", 900),
                    missing_evidence="no note on the ticket reports this check",
                )
            )
    if not snap.devices:
        unknown.append(
            Unknown(text="Which device is affected", missing_evidence="the ticket names no device")
        )
    elif not signals:
        unknown.append(
            Unknown(
                text=f"Whether monitoring sees a problem on {', '.join(snap.devices)}",
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


_CLAUSE = re.compile(r"(?<=[.!?;])\s+|\n+")


# A sentence that asks the reader for something: a question mark, or a request's opening words.
_ASKING = re.compile(
    r"^(please\s+(send|provide|confirm|share|tell|check|let us know|attach|describe|try)|"
    r"can you|could you|would you|do you|does|did|is|are|have you|has|what|which|when|where|who|how)\b",
    re.IGNORECASE,
)


def questions_to_customer(text: str) -> list[str]:
    """The sentences of a client-visible note that ask the customer for something."""
    asked = []
    for sentence in _SENTENCE.split(" ".join(text.split())):
        sentence = sentence.strip()
        if len(sentence) > 8 and (sentence.endswith("?") or _ASKING.match(sentence)):
            asked.append(sentence)
    return asked


def note_sentences(text: str) -> list[str]:
    """A note's sentences (engineers write several checks in one note)."""
    return [c.strip() for c in _CLAUSE.split(text) if len(c.strip()) > 3]


def _alert_sources(sig: KnownSignal, snap: TicketSnapshot, signal_url: str | None) -> list[Source]:
    """The signal's alerts, each quoted with its own text and linked to its source's page
    (the signal's page when the source gave none); those on the ticket's devices first."""
    described = sig.alerts
    if not described:  # a revision from before alerts were described: ids only
        return [
            Source(kind="alert", id=str(a), url=signal_url, excerpt=f"an alert of signal {sig.signal_id}")
            for a in sig.alert_ids[-3:]
        ]
    mine = set(snap.devices)
    ranked = sorted(
        enumerate(described), key=lambda ia: (ia[1].device not in mine, -ia[0])
    )  # on the ticket's devices first, then the latest
    out = []
    for _, a in ranked[:3]:
        where = f" ({a.device})" if a.device and a.device not in a.title else ""
        out.append(
            Source(kind="alert", id=str(a.alert_id), url=a.url or signal_url, excerpt=clip(a.title + where))
        )
    return out


def _steps(text: str) -> list[str]:
    """The steps a runbook section asks for: its list items, else its sentences."""
    items = [m.group(1).strip() for line in text.split("\n") if (m := _STEP.match(line))]
    if items:
        return items
    prose = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)
    return [s.strip() for s in _SENTENCE.split(" ".join(prose.split())) if len(s.strip()) > 15]
