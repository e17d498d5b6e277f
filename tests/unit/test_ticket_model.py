"""The local ticket classifier: learns a tenant's categories, says how sure it is, and names
the similar cases it leaned on."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evals.tickets import precision_at_coverage
from libs.common.settings import REPO_ROOT
from services.triage.tickets.model import TicketClassifier

VOCAB = {
    "Access": ["password", "reset", "locked", "account", "login", "mfa"],
    "Hardware": ["laptop", "screen", "keyboard", "dock", "broken", "charger"],
    "Purchase": ["order", "licence", "quote", "invoice", "buy", "renewal"],
}


def tickets(n: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """Texts drawn from each category's words plus shared filler; vectors that carry the
    category (as a sentence embedding would) with noise."""
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    fixed = np.random.default_rng(0)  # the categories sit where they sit, whatever the sample
    centres = {c: fixed.normal(size=16) for c in VOCAB}
    texts, labels, vecs = [], [], []
    for _ in range(n):
        c = rng.choice(list(VOCAB))
        words = rng.sample(VOCAB[c], 3) + rng.sample(
            ["please", "help", "thanks", "user", "today", "urgent"], 3
        )
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(c)
        v = centres[c] + gen.normal(scale=0.8, size=16)
        vecs.append(v / np.linalg.norm(v))
    return texts, labels, np.array(vecs, dtype=np.float32)


def write_csv(path: Path, texts: list[str], labels: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Document", "Topic_group"])
        w.writerows(zip(texts, labels, strict=True))
    return path


def test_it_learns_the_categories_and_is_sure_when_right() -> None:
    texts, labels, vecs = tickets(600, 1)
    model = TicketClassifier(char_ngrams=False).fit(texts, labels, vecs)
    t_texts, t_labels, t_vecs = tickets(200, 2)
    preds = model.predict(t_texts, t_vecs)
    correct = np.array([p.label == y for p, y in zip(preds, t_labels, strict=True)])
    assert correct.mean() > 0.95
    assert all(0.0 <= p.confidence <= 1.0 for p in preds)
    # the similar cases it names are labelled tickets, mostly of the label it chose
    p = preds[0]
    assert len(p.neighbours) == 10 and p.neighbours[0][1] >= p.neighbours[-1][1]
    assert sum(labels[j] == p.label for j, _ in p.neighbours) >= 6


def test_a_ticket_that_says_nothing_gets_low_confidence() -> None:
    texts, labels, vecs = tickets(600, 3)
    model = TicketClassifier(char_ngrams=False).fit(texts, labels, vecs)
    clear = model.predict(["password reset locked account login"], vecs[[labels.index("Access")]])[0]
    mean = vecs.mean(axis=0, keepdims=True)
    vague = model.predict(["please help thanks today"], mean / np.linalg.norm(mean))[0]
    assert clear.label == "Access"
    assert vague.confidence < clear.confidence


def test_it_refuses_what_it_cannot_learn_from() -> None:
    texts, labels, vecs = tickets(50, 4)
    with pytest.raises(ValueError, match="same length"):
        TicketClassifier().fit(texts, labels[:-1], vecs)
    with pytest.raises(ValueError, match="two labels"):
        TicketClassifier().fit(texts, ["Access"] * len(texts), vecs)


def test_precision_at_coverage_takes_the_most_confident_first() -> None:
    correct = np.array([True, False, True, True])
    confidence = np.array([0.9, 0.1, 0.8, 0.2])
    assert precision_at_coverage(correct, confidence, 0.5) == 1.0
    assert precision_at_coverage(correct, confidence, 1.0) == 0.75


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


def test_ndcg_rewards_relevant_cases_ranked_first() -> None:
    from evals.tickets import _ndcg_at

    first = np.array([[True] + [False] * 9])
    last = np.array([[False] * 9 + [True]])
    assert _ndcg_at(np.ones((1, 10), dtype=bool), 10)[0] == pytest.approx(1.0)
    assert _ndcg_at(first, 10)[0] > _ndcg_at(last, 10)[0] > 0


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


def test_a_stored_model_predicts_exactly_as_the_model_it_was_stored_from() -> None:
    import io

    texts, labels, vectors = tickets(400, seed=7)
    model = TicketClassifier().fit(texts, labels, vectors)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **model.to_arrays())
    with np.load(io.BytesIO(buffer.getvalue()), allow_pickle=False) as arrays:
        again = TicketClassifier.from_arrays(arrays)
    light = model.without_training_cases()
    memory = (vectors[:5].astype(np.float32) @ vectors.astype(np.float32).T, light.label_index(labels))
    a = light.predict(texts[:5], vectors[:5], memory)
    b = again.predict(texts[:5], vectors[:5], memory)
    assert [(p.label, round(p.confidence, 9)) for p in a] == [(p.label, round(p.confidence, 9)) for p in b]
    assert a[0].scores == pytest.approx(b[0].scores)
    assert light.evidence_terms(texts[0], a[0].label) == again.evidence_terms(texts[0], a[0].label)
