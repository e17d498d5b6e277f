"""`msp eval tickets`: the local ticket classifier on a labelled CSV, against a TF-IDF +
linear SVM baseline trained in the same run.

One file is split 80/20, stratified, seed 42; `--train`/`--test` give the parts explicitly.
The training part is learned as one tenant's history. Embeddings are kept in
`var/cache/embeddings.sqlite`, so only the first run pays for encoding. Time-to-classify is
measured per ticket, one at a time, on a sample of the test part with its embedding computed
afresh (not from the cache): what a new ticket costs.
"""

from __future__ import annotations

import csv
import gzip
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from libs.common.embeddings import Embedder


def _progress(msg: str) -> None:
    print(f"[eval tickets] {msg}", file=sys.stderr, flush=True)


def read_labelled(path: Path, text_col: str, label_col: str) -> tuple[list[int], list[str], list[str]]:
    if not path.is_file():
        raise ValueError(f"no labelled CSV at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:  # type: ignore[operator]
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        for col in (text_col, label_col):
            if col not in cols:
                raise ValueError(f"{path}: no column {col!r} (columns: {', '.join(cols)})")
        rows, texts, labels = [], [], []
        for i, r in enumerate(reader):
            text, label = (r[text_col] or "").strip(), (r[label_col] or "").strip()
            if text and label:
                rows.append(i)
                texts.append(text)
                labels.append(label)
    if not texts:
        raise ValueError(f"{path}: no labelled rows")
    return rows, texts, labels


def split(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation split: 80/20, stratified by label, seed 42."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=42, stratify=labels)
    return train, test


def precision_at_coverage(correct: np.ndarray, confidence: np.ndarray, coverage: float) -> float:
    order = np.argsort(-confidence, kind="stable")
    n = max(1, int(round(coverage * len(order))))
    return float(correct[order[:n]].mean())


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
) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.svm import LinearSVC

    from services.triage.tickets.model import TicketClassifier

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
    _progress(f"{len(tr_texts)} training and {len(te_texts)} test tickets; embedding (cached in {cache})")
    embedder = Embedder(store=cache)
    t = time.perf_counter()
    tr_vec = embedder.encode(tr_texts)
    te_vec = embedder.encode(te_texts)
    _progress(f"embedded in {time.perf_counter() - t:.0f} s; training")

    t = time.perf_counter()
    model = TicketClassifier().fit(tr_texts, tr_labels, tr_vec)
    train_s = time.perf_counter() - t
    preds = model.predict(te_texts, te_vec)
    truth = np.array(te_labels, dtype=object)
    got = np.array([p.label for p in preds], dtype=object)
    conf = np.array([p.confidence for p in preds])
    correct = got == truth

    # Time to classify a new ticket, one at a time, embedding included (no cache).
    sample = te_texts[: min(timing_sample, len(te_texts))]
    embedder.encode(["warm up"], cached=False)  # the model may not be loaded yet (all cached)
    times = []
    with threadpool_limits(limits=1, user_api="blas"):
        # One ticket's arithmetic is small: BLAS threads spinning beside torch's cost more
        # than they save; a service classifying ticket by ticket should limit them likewise.
        for text in sample:
            t = time.perf_counter()
            model.predict([text], embedder.encode([text], cached=False))
            times.append(time.perf_counter() - t)

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
        for row, p in zip(te_rows, preds, strict=True):
            w.writerow([row, p.label, f"{p.confidence:.4f}"])
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
        "train": len(tr_texts),
        "test": len(te_texts),
        "method": "linear SVM on word+char TF-IDF and MiniLM embeddings, blended with a similar-case vote",
        "blend_weight": model.blend,
        **figures(got, correct, conf),
        "p50_ms_to_classify": round(ms[len(ms) // 2], 1),
        "p95_ms_to_classify": round(ms[min(len(ms) - 1, int(len(ms) * 0.95))], 1),
        "train_seconds": round(train_s, 1),
        "baseline_tfidf_linear_svm": figures(base_pred, base_correct, base_margin),
        "predictions": str(predictions),
    }


def _ndcg_at(relevant: np.ndarray, k: int) -> np.ndarray:
    """nDCG@k per query, `relevant` being (queries, k) booleans in ranked order; the ideal
    ranking has k relevant cases (there are always more than k of each label here)."""
    gains = 1.0 / np.log2(np.arange(2, k + 2))
    return (relevant[:, :k] * gains).sum(axis=1) / gains.sum()


def evaluate_similar(
    *, data: Path, text_col: str, label_col: str, cache: Path, emb_weight: float = 0.5, chunk: int = 500
) -> dict[str, Any]:
    """Similar prior cases: for each test ticket, the 10 training tickets ranked by a hybrid of
    embedding cosine and TF-IDF cosine; a case of the same label counts as relevant. The
    TF-IDF-only ranking is the baseline, in the same run."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    _, texts, labels = read_labelled(data, text_col, label_col)
    tr, te = split(labels)
    y = np.array(labels, dtype=object)
    embedder = Embedder(store=cache)
    vec = embedder.encode(texts)
    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    a = tfidf.fit_transform([texts[i] for i in tr])
    b = tfidf.transform([texts[i] for i in te])
    k = 10
    hybrid_rel: list[np.ndarray] = []
    lexical_rel: list[np.ndarray] = []
    times: list[float] = []
    for start in range(0, len(te), chunk):
        q = te[start : start + chunk]
        t = time.perf_counter()
        lex = (b[start : start + chunk] @ a.T).toarray()
        sem = vec[q] @ vec[tr].T
        for scores, out in ((emb_weight * sem + (1 - emb_weight) * lex, hybrid_rel), (lex, lexical_rel)):
            top = np.argpartition(-scores, k, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
            ranked = np.take_along_axis(top, order, axis=1)
            out.append(y[tr][ranked] == y[q][:, None])
        times.append((time.perf_counter() - t) / len(q))
    hybrid, lexical = np.vstack(hybrid_rel), np.vstack(lexical_rel)
    return {
        "eval": "similar",
        "queries": int(len(te)),
        "candidates": int(len(tr)),
        "method": f"{emb_weight:g} x MiniLM cosine + {1 - emb_weight:g} x TF-IDF cosine",
        "precision_at_5": round(float(hybrid[:, :5].mean()), 4),
        "ndcg_at_10": round(float(_ndcg_at(hybrid, 10).mean()), 4),
        "ms_per_query": round(1000 * float(np.mean(times)), 2),
        "baseline_tfidf": {
            "precision_at_5": round(float(lexical[:, :5].mean()), 4),
            "ndcg_at_10": round(float(_ndcg_at(lexical, 10).mean()), 4),
        },
    }
