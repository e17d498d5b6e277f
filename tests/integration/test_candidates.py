"""Candidate mining and readiness on real tickets (`../shared/data/tickets`): a slice replayed
as one tenant through the automation service's own ticket handler, then mined. The full set is
measured with `msp eval candidates` (its figures are in the README)."""

from __future__ import annotations

from pathlib import Path

from evals.candidates import evaluate
from libs.common.settings import REPO_ROOT

TICKETS = REPO_ROOT.parent / "shared" / "data" / "tickets" / "it_service_tickets.csv.gz"


def test_recurring_real_tickets_become_ranked_candidates_with_counts(tmp_path: Path) -> None:
    report = evaluate(data=TICKETS, cache=tmp_path / "embeddings.sqlite", limit=1500)
    assert report["tickets"] == 1500 and report["replay_s"] > 0 and report["mining_s"] > 0
    top = report["top"]
    assert 3 <= len(top) <= 10
    counts = [c["tickets"] for c in top]
    assert counts == sorted(counts, reverse=True), "no handling times in this set: ranked by count"
    assert all(c["tickets"] >= 3 and abs(c["share"] - c["tickets"] / 1500) < 1e-3 for c in top)
    assert report["tickets_in_clusters"] >= sum(counts)
    assert report["ranked_by"].startswith("tickets (the history has no handling times)")
    ready = report["readiness"]
    labels = {c["category"] for c in ready["categories"]}
    assert {"Hardware", "Access", "HR Support"} <= labels
    assert sum(c["volume"] for c in ready["categories"]) == 1500
    assert ready["pilot"] is not None and ready["pilot"]["category"] in labels
    assert ready["pilot"]["before_starting"], "nothing in this set says how tickets were resolved"
    for c in ready["categories"]:
        assert 0.0 <= c["near_duplicate_share"] <= 1.0
        assert c["documented_resolutions"] == 0.0
