"""Customer report drafts (pure): a month of one tenant, in figures and sentences for the client.

Every figure carries the query it came from (`MonthData.queries`); every sentence names the
figures it states and the tickets, signals or runs it is about. A draft is never sent by the
platform: an engineer reads it, approves it, and sends it themselves.
"""

from __future__ import annotations

from collections import Counter
from statistics import median
from typing import Any

from services.packet.store.reports import MonthData


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _percent(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.0f}%"


class _Draft:
    def __init__(self, data: MonthData) -> None:
        self.data = data
        self.figures: list[dict[str, Any]] = []
        self.sections: list[dict[str, Any]] = []

    def figure(self, fid: str, label: str, value: Any, unit: str, query: str) -> str:
        self.figures.append({"id": fid, "label": label, "value": value, "unit": unit, "query": query})
        return fid

    def section(self, title: str, *sentences: dict[str, Any]) -> None:
        self.sections.append({"title": title, "sentences": [s for s in sentences if s]})


def _sentence(
    text: str, figures: list[str] | None = None, sources: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {"text": text, "figures": figures or [], "sources": sources or []}


def _incident(s: dict[str, Any]) -> dict[str, Any]:
    devices = ", ".join(s.get("devices") or ["no device"])
    first, last = (str(s[k])[:16].replace("T", " ") for k in ("first_seen", "last_seen"))
    return _sentence(
        f"{s['title']} ({s['severity']}): {s['count']} alerts on {devices}, {first} to {last} UTC.",
        [],
        [{"kind": "signal", "id": str(s["signal_id"])}],
    )


def compose(data: MonthData, *, resolve_target_s: float = 8 * 3600) -> dict[str, Any]:
    """The report's content: figures (each with its query) and sections of sentences."""
    d = _Draft(data)
    q = data.queries
    tickets = data.tickets
    by_category = Counter(category for category, _, _ in tickets.values())
    ticket_sources = [{"kind": "ticket", "id": t} for t in sorted(tickets)]

    # Tickets by category.
    total = d.figure("tickets", "Tickets opened", len(tickets), "tickets", q["tickets"])
    per_category = [
        d.figure(f"tickets.{category}", f"Tickets: {category}", n, "tickets", q["tickets"])
        for category, n in by_category.most_common()
    ]
    listed = ", ".join(f"{category} {n}" for category, n in by_category.most_common())
    d.section(
        "Tickets",
        _sentence(
            f"In {data.month} we handled {len(tickets)} tickets" + (f": {listed}." if listed else "."),
            [total, *per_category],
            ticket_sources,
        ),
    )

    # Service levels, as GET /v1/sla gives them for the month.
    sla = data.sla
    resolved = sla["resolved_after_escalation"]
    escalated = d.figure("escalated", "Tickets escalated", sla["escalated"], "tickets", q["sla"])
    tte = d.figure(
        "mean_time_to_escalate_s", "Mean time to escalate", sla["mean_time_to_escalate_s"], "s", q["sla"]
    )
    with_packet = d.figure(
        "resolve_with_packet_s",
        "Mean time to resolve after escalation, with a packet",
        resolved["with_packet"]["mean_s"],
        "s",
        q["sla"],
    )
    without_packet = d.figure(
        "resolve_without_packet_s",
        "Mean time to resolve after escalation, without a packet",
        resolved["without_packet"]["mean_s"],
        "s",
        q["sla"],
    )
    escalated_times = {
        t: f.time_to_resolve_after_escalation_s
        for t, (_, _, f) in tickets.items()
        if f.time_to_resolve_after_escalation_s is not None
    }
    within = [t for t, s in escalated_times.items() if s <= resolve_target_s]
    attainment = round(len(within) / len(escalated_times), 4) if escalated_times else None
    attained = d.figure(
        "resolve_target_attainment",
        f"Escalated tickets resolved within {_duration(resolve_target_s)}",
        attainment,
        "ratio",
        q["tickets"] + f"; resolved after escalation within {resolve_target_s:.0f} s",
    )
    reopen = d.figure("reopen_rate", "Reopen rate", sla["reopen_rate"], "ratio", q["sla"])
    escalated_sources = [{"kind": "ticket", "id": t} for t in sorted(escalated_times)]
    d.section(
        "Service levels",
        _sentence(
            f"{sla['escalated']} tickets were escalated, on average "
            f"{_duration(sla['mean_time_to_escalate_s'])} after they were opened.",
            [escalated, tte],
            [{"kind": "ticket", "id": t} for t, (_, _, f) in sorted(tickets.items()) if f.escalated_at],
        ),
        _sentence(
            f"Escalated tickets were resolved in {_duration(resolved['with_packet']['mean_s'])} on average "
            f"with an escalation packet ({resolved['with_packet']['tickets']} tickets) and in "
            f"{_duration(resolved['without_packet']['mean_s'])} without one "
            f"({resolved['without_packet']['tickets']} tickets); {_percent(attainment)} were resolved "
            f"within the {_duration(resolve_target_s)} target.",
            [with_packet, without_packet, attained],
            escalated_sources,
        )
        if escalated_times
        else _sentence("No escalated ticket was resolved this month.", [attained], []),
        _sentence(
            f"{_percent(sla['reopen_rate'])} of resolved tickets were reopened "
            f"({sla['reopened']} of {sla['resolved']}).",
            [reopen],
            [{"kind": "ticket", "id": t} for t, (_, _, f) in sorted(tickets.items()) if f.reopens],
        ),
    )

    # Notable incidents: the month's largest signals, critical first.
    notable = sorted(
        data.signals, key=lambda s: (s.get("severity") != "critical", -int(s.get("count", 0)), s["signal_id"])
    )[:5]
    incidents = d.figure("signals", "Alert signals", len(data.signals), "signals", q["signals"])
    d.section(
        "Notable incidents",
        _sentence(
            f"Monitoring alerts formed {len(data.signals)} signals this month."
            + (" The largest:" if notable else ""),
            [incidents],
            [{"kind": "signal", "id": str(s["signal_id"])} for s in notable],
        ),
        *(_incident(s) for s in notable),
    )

    # Automation: runs by outcome, and the time they saved against manual handling.
    outcomes = Counter(r["outcome"] for r in data.runs)
    run_figures = [
        d.figure(f"runs.{outcome}", f"Automation runs {outcome}", n, "runs", q["runs"])
        for outcome, n in sorted(outcomes.items())
    ]
    manual: dict[str, list[float]] = {}
    automated = {r["ticket_id"] for r in data.runs if r["ticket_id"]}
    for ticket_id, (category, _, f) in tickets.items():
        if ticket_id not in automated and f.time_to_resolve_s is not None:
            manual.setdefault(category, []).append(f.time_to_resolve_s)
    saved, estimated = 0.0, []
    for r in data.runs:
        if r["outcome"] != "succeeded" or r["ticket_id"] not in tickets:
            continue
        baseline = manual.get(tickets[r["ticket_id"]][0])
        if baseline:
            saved += max(median(baseline) - r["duration_s"], 0.0)
            estimated.append(r)
    saved_figure = d.figure(
        "time_saved_s",
        "Time saved by automation (estimate)",
        round(saved, 1),
        "s",
        q["runs"] + "; per succeeded run on a ticket of the month, the median time to resolve this "
        "month's tickets of its category that no automation touched, minus the run's duration",
    )
    d.section(
        "Automation",
        _sentence(
            f"{len(data.runs)} automated resolutions ran"
            + (f" ({', '.join(f'{n} {o}' for o, n in sorted(outcomes.items()))})" if outcomes else "")
            + f"; against manual handling they saved about {_duration(saved)}"
            + f" ({len(estimated)} runs with a manual baseline to compare).",
            [*run_figures, saved_figure],
            [{"kind": "execution", "id": r["run_id"]} for r in data.runs],
        ),
    )

    # Recurring issues: categories with three tickets or more, and what ran against them.
    recurring = [(c, n) for c, n in by_category.most_common() if n >= 3 and c != "uncategorised"]
    sentences = []
    for category, n in recurring:
        ids = sorted(t for t, (c, _, _) in tickets.items() if c == category)
        ran = [r for r in data.runs if r["ticket_id"] in ids]
        done = (
            f"automated resolutions ran on {len({r['ticket_id'] for r in ran})} of them"
            if ran
            else "none was resolved by automation yet"
        )
        sentences.append(
            _sentence(
                f"{category} came back {n} times; {done}.",
                [f"tickets.{category}"],
                [{"kind": "ticket", "id": t} for t in ids]
                + [{"kind": "execution", "id": r["run_id"]} for r in ran],
            )
        )
    d.section(
        "Recurring issues",
        *(
            sentences
            or [_sentence("No category came back three times or more.", per_category, ticket_sources)]
        ),
    )
    return {"month": data.month, "figures": d.figures, "sections": d.sections}
