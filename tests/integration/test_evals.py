"""`msp eval ...` as a user runs it: the command in a process of its own, on small files
written by the test (the evaluations load the sentence model and write their outputs)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libs.common.settings import REPO_ROOT
from tests.samples import VOCAB, tickets, write_csv

pytestmark = pytest.mark.integration


def test_eval_tickets_writes_one_prediction_per_test_row_and_a_baseline(tmp_path: Path) -> None:
    texts, labels, _ = tickets(400, 5)
    data = write_csv(tmp_path / "tickets.csv", texts, labels)
    out = tmp_path / "pred.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "--var-dir",
            str(tmp_path / "var"),
            "eval",
            "tickets",
            "--data",
            str(data),
            "--predictions",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["test"] == 80 and report["train"] == 320
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 80 and len({int(r["row"]) for r in rows}) == 80
    assert all(labels[int(r["row"])] in VOCAB for r in rows)
    assert report["macro_f1"] > 0.9 and "macro_f1" in report["baseline_tfidf_linear_svm"]
    assert (tmp_path / "var" / "cache" / "embeddings.sqlite").exists()


def test_eval_similar_ranks_same_label_cases_and_reports_a_lexical_baseline(tmp_path: Path) -> None:
    from evals.tickets import evaluate_similar

    texts, labels, _ = tickets(300, 6)
    data = write_csv(tmp_path / "tickets.csv", texts, labels)
    report = evaluate_similar(
        data=data, text_col="Document", label_col="Topic_group", cache=tmp_path / "c.sqlite"
    )
    assert report["queries"] == 60 and report["candidates"] == 240
    assert report["precision_at_5"] > 0.9, "three well-separated categories: neighbours share the label"
    assert 0 < report["baseline_tfidf"]["ndcg_at_10"] <= 1


def test_eval_runbooks_writes_a_ranking_per_query_and_a_bm25_baseline(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "net").mkdir(parents=True)
    (docs / "net" / "VpnTunnelDown.md").write_text(
        "# VpnTunnelDown\n\n## Meaning\nThe IPsec tunnel to a branch is down.\n"
    )
    (docs / "DiskFull.md").write_text("# DiskFull\n\n## Meaning\nA volume is nearly full.\n")
    queries = tmp_path / "queries.json"
    queries.write_text(
        json.dumps(
            [
                {
                    "alert": "VpnTunnelDown",
                    "summary": "Tunnel down.",
                    "description": "IPsec to {{ $labels.site }} is down.",
                    # A comment in a rule is prose, not the rule: the expression protocol drops it.
                    "expr": "# volume nearly full volume\nipsec_tunnel_up{site!=''} == 0",
                    "runbook_path": "docs/net/VpnTunnelDown.md",
                },
                {
                    "alert": "DiskFull",
                    "summary": "Volume almost full.",
                    "description": "",
                    "expr": "volume_free_ratio < 0.05",
                    "runbook_path": "docs/DiskFull.md",
                },
            ]
        )
    )
    out = tmp_path / "rank.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "--var-dir", str(tmp_path / "var"), "eval", "runbooks",
         "--docs", str(docs), "--queries", str(queries), "--rankings", str(out)],
        cwd=REPO_ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["queries"] == 2 and report["recall_at_1"] == 1.0 and "mrr" in report["baseline_bm25"]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0] == {"alert": "VpnTunnelDown", "ranked": ["net/VpnTunnelDown.md", "DiskFull.md"]}
    by_expr = subprocess.run(
        [sys.executable, "-m", "cli.main", "--var-dir", str(tmp_path / "var"), "eval", "runbooks",
         "--docs", str(docs), "--queries", str(queries), "--rankings", str(out),
         "--query-from", "expression"],
        cwd=REPO_ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert by_expr.returncode == 0, by_expr.stderr[-2000:]
    assert json.loads(by_expr.stdout)["query_from"] == "expression"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [line["ranked"][0] for line in lines] == ["net/VpnTunnelDown.md", "DiskFull.md"]
    no_expr = tmp_path / "no-expr.json"
    no_expr.write_text(json.dumps([{"alert": "A", "summary": "s", "runbook_path": "docs/DiskFull.md"}]))
    missing = subprocess.run(
        [sys.executable, "-m", "cli.main", "eval", "runbooks", "--docs", str(docs), "--queries",
         str(no_expr), "--rankings", str(out), "--query-from", "expression"],
        cwd=REPO_ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode != 0 and "needs alert, expr and runbook_path" in missing.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "cli.main", "eval", "runbooks", "--docs", str(tmp_path / "nope"),
         "--queries", str(queries), "--rankings", str(out)],
        cwd=REPO_ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0 and "no runbook folder" in bad.stderr
