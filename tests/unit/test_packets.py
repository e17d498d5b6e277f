"""Packet logic without I/O: runbooks into sections, the hybrid search, what a packet says and
cites, and how it is rendered for a PSA."""

from __future__ import annotations

import uuid
import zlib

import numpy as np
import pytest

from libs.common.events import EscalationPacketPayload
from services.packet import builder, psa
from services.packet.kb.markdown import anchor, parse
from services.packet.kb.search import BM25, RunbookIndex, tokens
from services.packet.known import KnownSignal, KnownTicket

DOC = """---
title: Node disk filling up
weight: 3
---
# NodeFilesystemSpaceFillingUp

Intro text.

## Diagnosis
- Check which directories grew with `du`.
- Confirm the log rotation ran.

```shell
# this is a comment, not a heading
df -h
```

## Mitigation
Free space or extend the volume.
"""


def embed(texts: list[str]) -> np.ndarray:
    """Bag-of-words vectors (hashed): similar words, similar vectors; enough for ranking tests.
    Hashed with CRC-32, the same in every process (`hash()` of a string is salted per process,
    which made which words share a bucket, and so the rankings, change from run to run)."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in tokens(t):
            out[i, zlib.crc32(w.encode()) % 64] += 1
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


def test_a_runbook_is_split_at_its_headings_but_not_inside_code() -> None:
    book = parse(DOC, fallback_title="x")
    assert book.title == "Node disk filling up" and book.meta["weight"] == 3
    headings = [s.heading for s in book.sections]
    assert headings == ["NodeFilesystemSpaceFillingUp", "Diagnosis", "Mitigation"]
    diagnosis = book.sections[1]
    assert diagnosis.path == ("NodeFilesystemSpaceFillingUp", "Diagnosis") and diagnosis.anchor == "diagnosis"
    assert "# this is a comment" in diagnosis.text and "df -h" in diagnosis.text
    assert anchor("Check the API (v2)!") == "check-the-api-v2"
    assert parse("just text", fallback_title="notes").title == "notes"
    with pytest.raises(ValueError, match="front matter"):
        parse("---\ntitle: [unclosed\n---\nbody", fallback_title="x")


def test_setext_headings_split_and_indented_code_does_not() -> None:
    book = parse(
        "Disk full\n=========\n\nMeaning text.\n\nMitigation\n----------\n\n    # not a heading: code\n"
        "    rm -rf /tmp/cache\n\n<!-- # nor this -->\n",
        fallback_title="disk.md",
    )
    assert book.title == "Disk full"
    assert [(s.heading, s.path) for s in book.sections] == [
        ("Disk full", ("Disk full",)),
        ("Mitigation", ("Disk full", "Mitigation")),
    ]
    assert "# not a heading: code" in book.sections[1].text and "# nor this" in book.sections[1].text


def test_identifiers_are_split_and_templates_dropped() -> None:
    got = tokens("KubePodCrashLooping: pod {{ $labels.pod }} restarts, node_filesystem_avail low")
    assert {"kubepodcrashloop", "kube", "pod", "crash", "loop"} <= set(got)  # stemmed too
    assert "labels" not in got
    assert "restart" in got and "low" in got


def test_bm25_prefers_the_document_about_the_query() -> None:
    bm = BM25([tokens("disk full on the file server"), tokens("printer jammed"), tokens("vpn tunnel down")])
    scores = bm.scores(tokens("the file server disk is full"))
    assert scores.argmax() == 0 and scores[1] == scores[2] == 0
    assert BM25([]).scores(["x"]).shape == (0,)


def test_the_search_names_the_document_and_its_best_section() -> None:
    books = [
        parse(DOC, fallback_title="a"),
        parse(
            "# VPN tunnel down\n\n## Diagnosis\nCheck the IPsec phase 1 on the gateway.\n", fallback_title="b"
        ),
        parse(
            "# Printer offline\n\n## Diagnosis\nPing the printer and check its queue.\n", fallback_title="c"
        ),
    ]
    index = RunbookIndex(books, embed)
    hits = index.search("IPsec tunnel to the branch is down on the gateway", k=3)
    assert hits[0].doc == 1 and books[1].sections[hits[0].section].heading == "Diagnosis"
    assert index.search("filesystem space filling up on node", k=1)[0].doc == 0
    with pytest.raises(ValueError, match="section vectors"):
        RunbookIndex(books, embed, np.zeros((1, 64), dtype=np.float32))


def test_a_runbook_the_alerts_rule_names_comes_first() -> None:
    books = [
        parse("# Service down\n\n## Meaning\nThe service is down for its customers.\n", fallback_title="a"),
        parse(
            "---\ntitle: Kube Pod Crash Looping\n---\n## Meaning\nA container restarts over and over.\n",
            fallback_title="b",
        ),
    ]
    index = RunbookIndex(books, embed)
    query = "Service down for customers"
    assert [h.doc for h in index.search(query, k=2)] == [0, 1]  # the text alone decides
    hits = index.search(query, k=2, names=["KubePodCrashLooping"])
    assert [h.doc for h in hits] == [1, 0] and hits[0].named and not hits[1].named
    assert [h.doc for h in index.search(query, k=2, names=["kube_pod_crash_looping"])] == [1, 0]
    assert [h.doc for h in index.search(query, k=2, names=["NodeDiskFull", ""])] == [0, 1]


def test_a_named_runbook_is_offered_with_high_confidence_however_its_text_compares() -> None:
    weak = builder.RunbookMatch(**{**match().__dict__, "score": 0.05})
    assert builder.build(ticket(), [signal()], [weak], None).runbook == []
    named = builder.RunbookMatch(**{**weak.__dict__, "named": True})
    (claim,) = builder.build(ticket(), [signal()], [named], None).runbook
    assert claim.confidence == 0.95 and claim.sources[0].kind == "runbook"


def ticket(notes: list[str] | None = None, devices: list[str] | None = None) -> KnownTicket:
    return KnownTicket.model_validate(
        {
            "ticket_id": "T-9",
            "snapshot": {
                "ticket_id": "T-9",
                "title": "Disk full on FS01",
                "description": "Users cannot save. Since 9am.",
                "devices": ["FS01"] if devices is None else devices,
                "site": "hq",
                "requester": "ann",
                "url": "https://psa/T-9",
            },
            "notes": [{"note_id": f"n{i}", "text": t, "author": "l1"} for i, t in enumerate(notes or [])],
            "escalations": [
                {"from_tier": "L1", "to_tier": "L2", "event_id": "e", "at": "2026-11-20T09:00:00+00:00"}
            ],
            "escalated": True,
            "closed": False,
        }
    )


def match(book_text: str = DOC) -> builder.RunbookMatch:
    book = parse(book_text, fallback_title="x")
    return builder.RunbookMatch(
        scope="tenant:acme",
        path="disk.md",
        title=book.title,
        url="https://kb/disk",
        section=book.sections[1],
        sections=book.sections,
        score=0.7,
    )


SIGNAL = {
    "signal_id": str(uuid.uuid4()),
    "state": "opened",
    "title": "Disk D: above 97% on FS01",
    "severity": "critical",
    "devices": ["FS01"],
    "sites": ["hq"],
    "first_seen": "2026-11-26T08:00:00+00:00",
    "count": 4,
    "confidence": 0.9,
    "alert_ids": [str(uuid.uuid4()) for _ in range(5)],
}


def signal(d: dict[str, object] | None = None) -> KnownSignal:
    """A signal as the packet service knows it, from the fields a test sets."""
    d = d or SIGNAL
    return KnownSignal.model_validate(
        {"member_alert_ids": [SIGNAL["signal_id"]], "last_seen": SIGNAL["first_seen"], **d}
    )


def test_every_claim_cites_its_sources_and_unknowns_say_what_is_missing() -> None:
    triage = {
        "similar_cases": [
            {
                "ticket_id": "T-1",
                "score": 0.88,
                "resolution_summary": "archived old files",
                "url": "https://psa/T-1",
            }
        ]
    }
    parts = builder.build(
        ticket(["Checked which directories grew with du: the CAD folder."]), [signal()], [match()], triage
    )
    for name in ("summary", "related_alerts", "runbook", "already_tried", "similar_cases"):
        claims = getattr(parts, name)
        assert claims, f"no {name}"
        assert all(c.sources for c in claims)
    assert {s.kind for s in parts.related_alerts[0].sources} == {"signal", "alert"}
    assert len(parts.related_alerts[0].sources) == 4  # the signal and its 3 latest alerts
    assert parts.runbook[0].sources[0].url == "https://kb/disk#diagnosis"
    assert parts.runbook[0].sources[0].id == "tenant:acme:disk.md#diagnosis"
    # The runbook's checks: the one a note answers is not unknown, the other is.
    unknown = [u.text for u in parts.still_unknown]
    assert any("log rotation" in u for u in unknown)
    assert not any("directories grew" in u for u in unknown)
    assert parts.similar_cases[0].sources[0].id == "T-1" and parts.similar_cases[0].confidence == 0.88


def test_related_signals_are_ranked_by_how_they_relate_and_their_confidence_says_so() -> None:
    elsewhere = {
        **SIGNAL,
        "signal_id": str(uuid.uuid4()),
        "title": "Antivirus: threat quarantined on WS-07",
        "devices": ["WS-07"],
        "first_seen": "2026-11-26T07:00:00+00:00",  # earlier than the disk signal
    }
    downstream = {
        **SIGNAL,
        "signal_id": str(uuid.uuid4()),
        "title": "Share unreachable on NAS-2",
        "devices": ["NAS-2"],
        "sites": [],
        "reasons": [{"feature": "topology", "detail": "alert on upstream device FS01", "weight": 0.8}],
    }
    ended = {**SIGNAL, "signal_id": str(uuid.uuid4()), "state": "resolved"}
    parts = builder.build(ticket(), [signal(x) for x in (elsewhere, downstream, ended, SIGNAL)], [], None)
    got = [(c.sources[0].id, c.confidence) for c in parts.related_alerts]
    assert got == [
        (SIGNAL["signal_id"], 0.9),  # the ticket's own device, still open
        (ended["signal_id"], 0.72),  # the ticket's device, but over
        (downstream["signal_id"], 0.7),  # fed by the ticket's device
        (elsewhere["signal_id"], 0.35),  # only the same site: listed last, and said so
    ]
    assert "another device at the ticket's site hq" in parts.related_alerts[-1].text
    assert "the ticket's device FS01" in parts.related_alerts[0].text


def test_the_runbook_claim_points_at_the_section_for_the_next_step() -> None:
    book = "# Disk full\n\n## Meaning\nThe volume is nearly full.\n\n" + DOC.split("Intro text.\n\n", 1)[1]
    best_is_meaning = builder.RunbookMatch(
        **{**match(book).__dict__, "section": parse(book, fallback_title="x").sections[1]}
    )
    assert best_is_meaning.section.heading == "Meaning"
    # Checks still open: the diagnosis, not the section that merely reads most like the ticket.
    parts = builder.build(ticket(), [signal()], [best_is_meaning], None)
    assert parts.runbook[0].sources[0].id.endswith("#diagnosis"), parts.runbook[0].sources[0].id
    # Every check reported in the notes: what to do next.
    done = ticket(["Checked which directories grew with du.", "Confirmed the log rotation ran."])
    parts = builder.build(done, [signal()], [best_is_meaning], None)
    assert parts.runbook[0].sources[0].id.endswith("#mitigation"), parts.runbook[0].sources[0].id
    assert not any(u.text.startswith("Not yet checked") for u in parts.still_unknown)


def test_what_is_missing_is_said_when_there_is_no_evidence() -> None:
    parts = builder.build(ticket(devices=[]), [], [], None)
    missing = {u.text: u.missing_evidence for u in parts.still_unknown}
    assert "Which device is affected" in missing and "Which runbook applies" in missing
    assert parts.related_alerts == [] and parts.runbook == [] and parts.similar_cases == []
    weak = builder.build(ticket(), [], [builder.RunbookMatch(**{**match().__dict__, "score": 0.1})], None)
    assert weak.runbook == [], "a runbook that barely matches is not offered"
    assert any(u.text.startswith("Whether monitoring sees") for u in weak.still_unknown)


def test_notes_render_for_each_psa_as_internal_and_escaped() -> None:
    parts = builder.build(ticket(["<script>alert(1)</script> tried a reboot"]), [signal()], [match()], None)
    p = EscalationPacketPayload(
        packet_id=uuid.uuid4(),
        ticket_id="123",
        version=2,
        summary=parts.summary,
        related_alerts=parts.related_alerts,
        runbook=parts.runbook,
        already_tried=parts.already_tried,
        still_unknown=parts.still_unknown,
    )
    html = psa.render_html(p)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert psa.marker(p) in html and psa.marker(p) in psa.render_markdown(p)
    target = psa.Target("halopsa", "https://halo.example", {"token": "t"}, {})
    url, headers, body = psa.request_for(target, "acme", "123", p, None)
    assert (
        url == "https://halo.example/api/Actions"
        and body[0]["hiddenfromuser"] is True
        and body[0]["ticket_id"] == 123
    )
    cw = psa.Target(
        "connectwise",
        "https://cw.example/",
        {"company": "c", "public_key": "p", "private_key": "s", "client_id": "x"},
        {},
    )
    url, headers, body = psa.request_for(cw, "acme", "123", p, "https://msp/page")
    assert url.endswith("/service/tickets/123/notes") and body["internalAnalysisFlag"] is True
    assert headers["Authorization"].startswith("Basic ") and "https://msp/page" in body["text"]
    with pytest.raises(ValueError, match="unknown PSA kind"):
        psa.request_for(psa.Target("servicenow", "https://x", {}, {}), "acme", "1", p, None)


def test_what_the_platform_ran_on_the_ticket_is_already_tried_with_its_execution() -> None:
    run = {
        "run_id": "r-1",
        "logs_url": "https://msp/runs/r-1",
        "outcome": "partial",
        "steps": [
            {"action": "ad.unlock_account", "params": {"user": "ann"}},
            {"action": "ad.reset_password", "params": {"user": "ann"}},
        ],
        "results": [
            {
                "index": 0,
                "action": "ad.unlock_account",
                "outcome": "succeeded",
                "error_class": None,
                "message": "",
            },
            {
                "index": 1,
                "action": "ad.reset_password",
                "outcome": "failed",
                "error_class": "PolicyError",
                "message": "too short",
            },
        ],
    }
    parts = builder.build(ticket(), [], [], None, [run])
    ran = [c for c in parts.already_tried if c.sources[0].kind == "execution"]
    assert [c.text for c in ran] == [
        "The platform ran ad.unlock_account(user=ann): succeeded",
        "The platform ran ad.reset_password(user=ann): failed: PolicyError too short",
    ]
    assert ran[1].sources[0].id == "r-1/1" and ran[1].sources[0].url == "https://msp/runs/r-1"


def test_the_runbook_page_shows_markup_in_a_runbook_as_text() -> None:
    from services.packet import pages

    book = parse(
        "# Disk <img src=x onerror=alert(1)>\n\n## Diagnosis\nRun `df -h` </pre><script>x()</script>\n",
        fallback_title="disk.md",
    )
    page = pages.render("runbook_page.html", title=book.title, book=book, key="global", path="a'b.md")
    assert "<script>" not in page and "<img" not in page and "&lt;script&gt;" in page
    assert f'id="{book.sections[-1].anchor}"' in page and "a&#39;b.md" in page
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")


def test_sla_figures_of_a_ticket_come_from_its_events_in_any_order() -> None:
    from datetime import UTC, datetime, timedelta

    from services.packet.store.lifecycle import figures

    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def ev(kind: str, minutes: int, packet: bool = False) -> tuple[str, datetime, bool]:
        return kind, t0 + timedelta(minutes=minutes), packet

    # Out of order, resolved without a packet, closed only (a PSA without a resolved state).
    f = figures([ev("closed", 200), ev("escalated", 20), ev("created", 0), ev("escalated", 90)])
    assert (f.time_to_escalate_s, f.time_to_resolve_after_escalation_s) == (1200.0, 10800.0)
    assert not f.resolved_with_packet and f.resolutions == 1 and f.resolves("closed")
    # Resolved before the escalation (L1 fixed it, then it came back escalated): the
    # resolution that counts is the one after the escalation; closed after resolved is not one.
    f = figures(
        [
            ev("created", 0),
            ev("resolved", 10),
            ev("reopened", 30),
            ev("escalated", 40),
            ev("resolved", 100, packet=True),
            ev("closed", 110, packet=True),
        ]
    )
    assert f.time_to_resolve_after_escalation_s == 3600.0 and f.resolved_with_packet
    assert (f.resolutions, f.reopens, f.resolves("closed")) == (2, 1, False)
    # Never escalated: no escalation figures.
    f = figures([ev("created", 0), ev("resolved", 5)])
    assert f.time_to_escalate_s is None and f.time_to_resolve_after_escalation_s is None


def test_a_flood_of_tenants_cannot_blow_up_the_metric_labels() -> None:
    from libs.common import sla

    first = [sla.tenant_label(f"flood-{i}") for i in range(600)]
    labelled = [t for t in first if t != sla.OTHER_TENANTS]
    assert len(labelled) <= 500 and first.count(sla.OTHER_TENANTS) >= 100
    # The same answer for a tenant for the life of the process.
    assert [sla.tenant_label(f"flood-{i}") for i in range(600)] == first


def test_a_report_states_only_what_its_figures_and_sources_hold() -> None:
    from datetime import UTC, datetime, timedelta

    from services.packet.reports import compose
    from services.packet.store.lifecycle import figures
    from services.packet.store.reports import MonthData

    t0 = datetime(2026, 10, 1, tzinfo=UTC)

    def life(*events: tuple[str, int]) -> object:
        return figures([(kind, t0 + timedelta(minutes=m), False) for kind, m in events])

    data = MonthData(
        tenant_id="acme",
        month="2026-10",
        sla={
            "escalated": 1,
            "mean_time_to_escalate_s": 1800.0,
            "resolved_after_escalation": {
                "with_packet": {"tickets": 0, "mean_s": None},
                "without_packet": {"tickets": 1, "mean_s": 36000.0},
            },
            "resolved": 2,
            "reopened": 0,
            "reopen_rate": 0.0,
        },
        tickets={
            "T-1": ("Email", "Mailbox full", life(("created", 0), ("escalated", 30), ("resolved", 630))),
            "T-2": ("Email", "Cannot send", life(("created", 0), ("resolved", 60))),
        },
        signals=[],
        runs=[],
        queries={k: f"query for {k}" for k in ("tickets", "sla", "signals", "runs")},
    )
    report = compose(data, resolve_target_s=8 * 3600)  # type: ignore[arg-type]
    figures_by_id = {f["id"]: f for f in report["figures"]}
    assert figures_by_id["resolve_target_attainment"]["value"] == 0.0  # 10 h against an 8 h target
    assert figures_by_id["time_saved_s"]["value"] == 0.0 and figures_by_id["signals"]["value"] == 0
    text = " ".join(s["text"] for sec in report["sections"] for s in sec["sentences"])
    assert "2 tickets: Email 2." in text and "0% were resolved within the 8.0 h target" in text
    assert "No category came back three times or more." in text  # two is not recurring
    for section in report["sections"]:
        for s in section["sentences"]:
            assert s["figures"] or s["sources"], s["text"]


def test_the_questions_a_note_asks_the_customer_are_found_by_their_form() -> None:
    from services.packet.builder import questions_to_customer

    note = (
        "Thanks for your patience. Could you send us a screenshot of the error? "
        "We restarted the print spooler this morning. Which printer were you printing to? "
        "Please confirm the laptop is on the office network."
    )
    assert questions_to_customer(note) == [
        "Could you send us a screenshot of the error?",
        "Which printer were you printing to?",
        "Please confirm the laptop is on the office network.",
    ]
    assert questions_to_customer("Restarted the spooler; printing works again. Closing the ticket.") == []
