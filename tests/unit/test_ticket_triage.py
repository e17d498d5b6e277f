"""The triager's decisions without I/O: which model decides, what similar cases it names and
for whom, and when it abstains. Vectors are synthetic (they carry the category, as sentence
embeddings would); the service-level tests use the real embedding model."""

from __future__ import annotations

import numpy as np
import pytest

from services.triage.tickets import priority
from services.triage.tickets.intents import CATALOGUE, IntentMatcher
from services.triage.tickets.model import TicketClassifier
from services.triage.tickets.triager import Case, TicketTriager, TriageConfig, snapshot_of, ticket_text
from services.triage.tickets.triager import train as train_model
from tests.samples import tickets


def embed(texts: list[str]) -> np.ndarray:
    """A stable pseudo-embedding per text (16 dimensions, unit length)."""
    out = []
    for t in texts:
        v = np.random.default_rng(abs(hash(t)) % 2**32).normal(size=16)
        out.append(v / np.linalg.norm(v))
    return np.array(out, dtype=np.float32)


@pytest.fixture(scope="module")
def global_model() -> TicketClassifier:
    texts, _, vecs = tickets(300, 11)
    # The global taxonomy differs from the tenants' own, as it would.
    labels = ["Global-" + t.split()[0][:1] for t in texts]
    labels = ["Global-A" if i % 2 else "Global-B" for i in range(len(texts))]
    return TicketClassifier(char_ngrams=False).fit(texts, labels, vecs)


@pytest.fixture(scope="module")
def matcher() -> IntentMatcher:
    return IntentMatcher(CATALOGUE, embed)


def history(triager: TicketTriager, tenant: str, n: int, seed: int, prefix: str) -> None:
    texts, labels, vecs = tickets(n, seed)
    cases = triager.cases(tenant)
    for i, (text, label, vec) in enumerate(zip(texts, labels, vecs, strict=True)):
        cases.add(Case(f"{prefix}-{i}", text, label, "P3", f"fixed by {prefix}", None), vec)
    t, y, v, upto = cases.training_set()
    model = TicketClassifier(char_ngrams=False).fit(t, y, v)
    cases.install(model, upto)


def test_a_new_tenant_with_no_history_falls_back_to_the_global_model(
    global_model: TicketClassifier, matcher: IntentMatcher
) -> None:
    triager = TicketTriager(TriageConfig(abstain_below=0.0), global_model)
    history(triager, "old-client", 300, 1, "old")
    texts, _, vecs = tickets(1, 2)
    fresh = triager.classify("new-client", snapshot_of("T-1", texts[0]), vecs[0], matcher)
    assert fresh.category.method == "global_model"
    assert fresh.category.label in {"Global-A", "Global-B"}
    assert fresh.similar_cases == [], "a tenant with no history has no similar cases"
    known = triager.classify("old-client", snapshot_of("T-1", texts[0]), vecs[0], matcher)
    assert known.category.method == "tenant_model"
    assert known.category.label in {"Access", "Hardware", "Purchase"}


def test_a_tenant_gets_its_own_model_once_its_history_is_large_enough(global_model: TicketClassifier) -> None:
    config = TriageConfig(min_history=50, retrain_min_new=20, retrain_growth=0.1)
    triager_cases = TicketTriager(config, global_model).cases("c")
    texts, labels, vecs = tickets(49, 3)
    for i, (t, y, v) in enumerate(zip(texts, labels, vecs, strict=True)):
        triager_cases.add(Case(f"c-{i}", t, y, None, "", None), v)
    assert not triager_cases.wants_training(config)
    triager_cases.add(Case("c-49", texts[0], labels[0], None, "", None), vecs[0])
    assert triager_cases.wants_training(config)
    t, y, v, upto = triager_cases.training_set()
    triager_cases.install(train_model(t, y, v), upto)
    assert not triager_cases.wants_training(config), "no retraining before the history grows"


def test_a_resolved_ticket_is_a_similar_case_at_once(
    global_model: TicketClassifier, matcher: IntentMatcher
) -> None:
    triager = TicketTriager(TriageConfig(), global_model)
    history(triager, "acme", 200, 4, "acme")
    texts, labels, vecs = tickets(2, 5)
    before = triager.classify("acme", snapshot_of("NEW-2", texts[1]), vecs[0], matcher)
    assert "NEW-1" not in [c.ticket_id for c in before.similar_cases]
    triager.cases("acme").add(
        Case("NEW-1", texts[0], labels[0], "P2", "reset the token", "https://psa/NEW-1"), vecs[0]
    )
    after = triager.classify("acme", snapshot_of("NEW-2", texts[1]), vecs[0], matcher)
    top = after.similar_cases[0]
    assert (top.ticket_id, top.resolution_summary, top.url) == (
        "NEW-1",
        "reset the token",
        "https://psa/NEW-1",
    )
    assert top.score == pytest.approx(1.0, abs=2e-3)  # half-precision look-up
    # a ticket is never its own similar case
    itself = triager.classify("acme", snapshot_of("NEW-1", texts[0]), vecs[0], matcher)
    assert "NEW-1" not in [c.ticket_id for c in itself.similar_cases]


def test_identical_tickets_of_another_tenant_never_appear_among_similar_cases(
    global_model: TicketClassifier, matcher: IntentMatcher
) -> None:
    triager = TicketTriager(TriageConfig(), global_model)
    texts, labels, vecs = tickets(120, 6)
    for tenant in ("tenant-a", "tenant-b"):
        cases = triager.cases(tenant)
        for i, (t, y, v) in enumerate(zip(texts, labels, vecs, strict=True)):
            cases.add(Case(f"{tenant}-{i}", t, y, None, f"{tenant} fix", None), v)
    for i in range(0, 120, 7):
        result = triager.classify("tenant-b", snapshot_of(f"q-{i}", texts[i]), vecs[i], matcher)
        ids = [c.ticket_id for c in result.similar_cases]
        assert ids and all(x.startswith("tenant-b-") for x in ids), ids
        assert all(c.resolution_summary == "tenant-b fix" for c in result.similar_cases)
        sources = [s.id for s in result.category.rationale.sources] if result.category.rationale else []
        assert not any(s.startswith("tenant-a-") for s in sources)


def test_low_confidence_abstains_and_asks_for_a_human(
    global_model: TicketClassifier, matcher: IntentMatcher
) -> None:
    triager = TicketTriager(TriageConfig(abstain_below=0.5), global_model)
    history(triager, "acme", 300, 7, "acme")
    texts, _, vecs = tickets(300, 8)
    vague_vec = vecs.mean(axis=0)
    vague = triager.classify(
        "acme", snapshot_of("V-1", "please help thanks today"), vague_vec / np.linalg.norm(vague_vec), matcher
    )
    assert vague.category.label is None and vague.needs_human
    assert vague.category.method == "abstained:tenant_model"
    assert vague.category.confidence < 0.5
    assert vague.candidates and vague.candidates[0][0] in {"Access", "Hardware", "Purchase"}
    clear = triager.classify("acme", snapshot_of("C-1", texts[0]), vecs[0], matcher)
    assert clear.category.label is not None and not clear.needs_human
    assert clear.category.rationale is not None and clear.category.rationale.sources


def test_every_rationale_cites_a_source(global_model: TicketClassifier, matcher: IntentMatcher) -> None:
    triager = TicketTriager(TriageConfig(), global_model)
    history(triager, "acme", 200, 9, "acme")
    texts, _, vecs = tickets(20, 10)
    for i in range(20):
        r = triager.classify("acme", snapshot_of(f"X-{i}", texts[i]), vecs[i], matcher)
        for d in (r.category, r.priority):
            assert d.rationale is not None and d.rationale.sources


def test_open_critical_signals_make_a_ticket_critical() -> None:
    call = priority.decide("email is slow", [("sig-1", "critical"), ("sig-2", "warning")], [])
    assert (call.label, call.method, call.evidence) == ("critical", "signals", ("sig-1",))
    assert priority.decide("the whole office is offline, outage", [], []).label == "critical"
    assert priority.decide("printer jam, no rush", [], []).label == "low"
    voted = priority.decide("printer jam", [], [("a", "P2", 0.9), ("b", "P2", 0.8), ("c", "P4", 0.3)])
    assert (voted.label, voted.method) == ("P2", "similar_cases")


def test_a_ticket_is_split_into_title_and_description_without_losing_text() -> None:
    long = "word " * 100 + "\nsecond line"
    snap = snapshot_of("T", long)
    assert len(snap.title) <= 200
    assert " ".join(ticket_text(snap).split()) == " ".join(long.split())


def test_the_global_model_learns_the_catalogue_and_the_operators_global_corpus() -> None:
    from services.triage.tickets.engine import local_path

    class FakeEmbedder:
        def encode(self, texts: list[str]) -> np.ndarray:
            return embed(list(texts))

    texts, labels, _ = tickets(60, 12)
    triager, matcher = local_path(FakeEmbedder(), TriageConfig(), ([f"g {t}" for t in texts], labels))  # type: ignore[arg-type]
    classes = set(triager.global_model.classes_)
    assert {i.category for i in CATALOGUE} <= classes and {"Access", "Hardware", "Purchase"} <= classes
    assert {i.name for i in matcher.intents} == {i.name for i in CATALOGUE}
