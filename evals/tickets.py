"""`msp eval tickets`: the service's local triage path on a labelled CSV, against a TF-IDF +
linear SVM baseline trained in the same run.

One file is split 80/20, stratified, seed 42; `--train`/`--test` give the parts explicitly.
The training part is learned as one tenant's resolved cases; the test part is classified
ticket by ticket through the service's triager (the code the triage service runs). Embeddings are kept in
`var/cache/embeddings.sqlite`, so only the first run pays for encoding. Time-to-classify is
measured per ticket, one at a time, on a sample of the test part with its embedding computed
afresh (not from the cache): what a new ticket costs.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.embeddings import Embedder
from services.triage.tickets.corpus import read_labelled


def _progress(msg: str) -> None:
    print(f"[eval tickets] {msg}", file=sys.stderr, flush=True)


def split(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation split: 80/20, stratified by label, seed 42."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=42, stratify=labels)
    return train, test


def few_shot(labels: list[str], keep: int, seed: int = 42) -> list[int]:
    """Positions of a training part that keeps every ticket of the two largest classes and
    `keep` tickets (drawn with a fixed seed) of every other class: a long tail of classes with
    few examples, from any labelled set."""
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    largest = sorted(by_class, key=lambda c: (-len(by_class[c]), c))[:2]
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    for label, positions in sorted(by_class.items()):
        if label in largest or len(positions) <= keep:
            kept += positions
        else:
            kept += sorted(int(i) for i in rng.choice(positions, size=keep, replace=False))
    return sorted(kept)


def precision_at_coverage(correct: np.ndarray, confidence: np.ndarray, coverage: float) -> float:
    order = np.argsort(-confidence, kind="stable")
    n = max(1, int(round(coverage * len(order))))
    return float(correct[order[:n]].mean())


def _tenant_history(
    embedder: Embedder, rows: list[int], texts: list[str], labels: list[str], vectors: np.ndarray
) -> tuple[Any, Any, Any]:
    """The service's local path with the training part as one tenant's resolved cases."""
    from services.triage.tickets.engine import local_path
    from services.triage.tickets.triager import Case, TriageConfig, snapshot_of, ticket_text

    triager, matcher = local_path(embedder, TriageConfig())
    cases = triager.cases(TENANT)
    for row, text, label, vector in zip(rows, texts, labels, vectors, strict=True):
        ticket = snapshot_of(f"row-{row}", text)
        cases.add(Case(ticket.ticket_id, ticket_text(ticket), label, None, "", None), vector)
    return triager, matcher, cases


TENANT = "eval"


def evaluate(
    *,
    data: Path | None,
    train: Path | None,
    test: Path | None,
    text_col: str,
    label_col: str,
    predictions: Path,
    cache: Path,
    timing_sample: int = 300,
    few_shot_k: int | None = None,
) -> dict[str, Any]:
    """`few_shot_k`: train on the largest two classes whole and that many tickets of each other
    class (the test part unchanged), as a long-tail label set would be."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.svm import LinearSVC

    from services.triage.tickets.triager import TriageConfig, snapshot_of
    from services.triage.tickets.triager import train as train_model

    if data is not None:
        rows, texts, labels = read_labelled(data, text_col, label_col)
        tr, te = split(labels)
        tr_rows, tr_texts, tr_labels = [rows[i] for i in tr], [texts[i] for i in tr], [labels[i] for i in tr]
        te_rows, te_texts, te_labels = [rows[i] for i in te], [texts[i] for i in te], [labels[i] for i in te]
    elif train is not None and test is not None:
        tr_rows, tr_texts, tr_labels = read_labelled(train, text_col, label_col)
        te_rows, te_texts, te_labels = read_labelled(test, text_col, label_col)
    else:
        raise ValueError("give --data, or both --train and --test")
    if few_shot_k is not None:
        if few_shot_k < 1:
            raise ValueError("--few-shot needs a positive number of tickets per class")
        keep = few_shot(tr_labels, few_shot_k)
        tr_rows, tr_texts, tr_labels = (
            [tr_rows[i] for i in keep],
            [tr_texts[i] for i in keep],
            [tr_labels[i] for i in keep],
        )
    _progress(f"{len(tr_texts)} training and {len(te_texts)} test tickets; embedding (cached in {cache})")
    embedder = Embedder(store=cache)
    t = time.perf_counter()
    tr_vec = embedder.encode(tr_texts)
    te_vec = embedder.encode(te_texts)
    _progress(f"embedded in {time.perf_counter() - t:.0f} s; training the tenant model")

    triager, matcher, cases = _tenant_history(embedder, tr_rows, tr_texts, tr_labels, tr_vec)
    t = time.perf_counter()
    texts_, labels_, vectors_, upto = cases.training_set()
    cases.install(train_model(texts_, labels_, vectors_), upto)
    train_s = time.perf_counter() - t
    config: TriageConfig = triager.config
    _progress(f"trained in {train_s:.0f} s; classifying {len(te_texts)} tickets one by one")

    got, conf = [], []
    for n, (row, text, vector) in enumerate(zip(te_rows, te_texts, te_vec, strict=True)):
        result = triager.classify(TENANT, snapshot_of(f"row-{row}", text), vector, matcher)
        # The label the local path would give, abstaining or not: precision at coverage
        # ranks by confidence; the abstention threshold is a deployment choice.
        label = result.category.label or (result.candidates[0][0] if result.candidates else "")
        got.append(label)
        conf.append(result.category.confidence)
        if n and n % 2000 == 0:
            _progress(f"{n} classified")
    # Time to classify a new ticket: its embedding computed afresh (no cache), then the
    # service's classification, one ticket at a time.
    embedder.encode(["warm up"], cached=False)
    times = []
    for row, text in list(zip(te_rows, te_texts, strict=True))[:timing_sample]:
        t = time.perf_counter()
        vector = embedder.encode([text], cached=False)[0]
        triager.classify(TENANT, snapshot_of(f"row-{row}", text), vector, matcher)
        times.append(time.perf_counter() - t)
    truth = np.array(te_labels, dtype=object)
    got_a = np.array(got, dtype=object)
    conf_a = np.array(conf)
    correct = got_a == truth

    _progress("baseline: TF-IDF + linear SVM")
    vec = TfidfVectorizer(sublinear_tf=True)
    base = LinearSVC().fit(vec.fit_transform(tr_texts), tr_labels)
    base_pred = base.predict(vec.transform(te_texts))
    base_conf = np.sort(base.decision_function(vec.transform(te_texts)), axis=1)
    base_margin = base_conf[:, -1] - base_conf[:, -2]
    base_correct = base_pred == truth

    predictions.parent.mkdir(parents=True, exist_ok=True)
    with predictions.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "label", "confidence"])
        for row, label, c in zip(te_rows, got, conf, strict=True):
            w.writerow([row, label, f"{c:.4f}"])
    classes = sorted(set(te_labels))

    def figures(pred: np.ndarray, ok: np.ndarray, confidence: np.ndarray) -> dict[str, Any]:
        per = f1_score(truth, pred, labels=classes, average=None)
        return {
            "accuracy": round(float(accuracy_score(truth, pred)), 4),
            "macro_f1": round(float(f1_score(truth, pred, average="macro")), 4),
            "per_class_f1": {c: round(float(f), 4) for c, f in zip(classes, per, strict=True)},
            "precision_at_80_coverage": round(precision_at_coverage(ok, confidence, 0.8), 4),
            "precision_at_90_coverage": round(precision_at_coverage(ok, confidence, 0.9), 4),
        }

    ms = sorted(x * 1000 for x in times)
    return {
        "eval": "tickets",
        "few_shot": few_shot_k,
        "train": len(tr_texts),
        "test": len(te_texts),
        "method": "service local path: tenant model (linear SVM on word+char TF-IDF and MiniLM "
        "embeddings) blended with the vote of the tenant's most similar cases",
        "blend_weight": cases.model.blend if cases.model is not None else None,
        **figures(got_a, correct, conf_a),
        "abstained_below": config.abstain_below,
        "abstention_share": round(float((conf_a < config.abstain_below).mean()), 4),
        "p50_ms_to_classify": round(ms[len(ms) // 2], 1),
        "p95_ms_to_classify": round(ms[min(len(ms) - 1, int(len(ms) * 0.95))], 1),
        "timed_tickets": len(ms),
        "train_seconds": round(train_s, 1),
        "baseline_tfidf_linear_svm": figures(base_pred, base_correct, base_margin),
        "predictions": str(predictions),
    }


def _ndcg_at(relevant: np.ndarray, k: int) -> np.ndarray:
    """nDCG@k per query, `relevant` being (queries, k) booleans in ranked order; the ideal
    ranking has k relevant cases (there are always more than k of each label here)."""
    gains = 1.0 / np.log2(np.arange(2, k + 2))
    return (relevant[:, :k] * gains).sum(axis=1) / gains.sum()


def evaluate_similar(*, data: Path, text_col: str, label_col: str, cache: Path) -> dict[str, Any]:
    """Similar prior cases, as the service finds them: for each test ticket, the 10 nearest
    of the tenant's resolved cases (the training part) by embedding cosine; a case of the same
    label counts as relevant. TF-IDF cosine ranking is the baseline, in the same run."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from services.triage.tickets.triager import nearest

    rows, texts, labels = read_labelled(data, text_col, label_col)
    tr, te = split(labels)
    y = np.array(labels, dtype=object)
    embedder = Embedder(store=cache)
    vec = embedder.encode(texts)
    _, _, cases = _tenant_history(
        embedder, [rows[i] for i in tr], [texts[i] for i in tr], [labels[i] for i in tr], vec[tr]
    )
    k = 10
    service_rel, times = [], []
    for q in te:
        t = time.perf_counter()
        found = nearest(cases, cases.similarities(vec[q]), k, exclude=f"row-{rows[q]}")
        times.append(time.perf_counter() - t)
        service_rel.append([c.category == y[q] for c, _ in found])
    service = np.array(service_rel, dtype=bool)

    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    a = tfidf.fit_transform([texts[i] for i in tr])
    b = tfidf.transform([texts[i] for i in te])
    lexical_rel = []
    for start in range(0, len(te), 500):
        scores = (b[start : start + 500] @ a.T).toarray()
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        ranked = np.take_along_axis(top, order, axis=1)
        lexical_rel.append(y[tr][ranked] == y[te[start : start + 500]][:, None])
    lexical = np.vstack(lexical_rel)
    return {
        "eval": "similar",
        "queries": int(len(te)),
        "candidates": int(len(tr)),
        "method": "service similar-case retrieval: MiniLM cosine over the tenant's resolved cases",
        "precision_at_5": round(float(service[:, :5].mean()), 4),
        "ndcg_at_10": round(float(_ndcg_at(service, 10).mean()), 4),
        "ms_per_query": round(1000 * float(np.mean(times)), 2),
        "baseline_tfidf": {
            "precision_at_5": round(float(lexical[:, :5].mean()), 4),
            "ndcg_at_10": round(float(_ndcg_at(lexical, 10).mean()), 4),
        },
    }
