"""`msp eval runbooks`: runbook retrieval as the packet service does it, against BM25 alone.

Each query is an alert's summary and description (never its name); the ground truth is the
runbook the alert's rule names. With `query_from="expression"` the same alerts are asked by
their rule's expression alone: alerts written the way a rule without annotations would send
them, the expression in their link, reduced to its metric names and label values as the
packet service reduces it (`services/packet/kb/promql.py`). Nothing in the search knows which
protocol it serves. Prints Recall@1, Recall@5 and MRR for the service's hybrid
search and for BM25 over whole documents (the same tokenizer) in the same run, and writes the
service's ranking per query as JSON lines.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.embeddings import Embedder
from services.packet.kb.promql import expression_terms

QUERY_FROM = ("annotations", "expression")


def read_queries(path: Path, docs: Path, query_from: str = "annotations") -> list[tuple[str, str, str]]:
    """(alert, query text, expected runbook path relative to `docs`). `runbook_path` in the
    file is relative to the file's own folder. The query text is the alert's summary and
    description, or (`query_from="expression"`) its rule's expression as `expression_terms` reduces it."""
    if query_from not in QUERY_FROM:
        raise ValueError(f"query_from must be one of {QUERY_FROM}, not {query_from!r}")
    if not path.is_file():
        raise ValueError(f"no queries file at {path}")
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of alerts")
    out = []
    for n, row in enumerate(rows):
        try:
            alert = row["alert"]
            if query_from == "expression":
                text = expression_terms(row["expr"])
            else:
                text = f"{row.get('summary', '')}\n{row.get('description', '')}".strip()
            expected = (path.parent / row["runbook_path"]).resolve()
        except (KeyError, TypeError, AttributeError):
            need = "expr" if query_from == "expression" else "summary/description"
            raise ValueError(f"{path}: entry {n} needs alert, {need} and runbook_path") from None
        try:
            rel = expected.relative_to(docs.resolve()).as_posix()
        except ValueError:
            continue  # a runbook outside the collection under test
        out.append((alert, text, rel))
    if not out:
        raise ValueError(f"{path}: no query names a runbook under {docs}")
    return out


def _figures(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks)
    return {
        "recall_at_1": round(sum(r == 1 for r in ranks) / n, 4),
        "recall_at_5": round(sum(r is not None and r <= 5 for r in ranks) / n, 4),
        "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
    }


def evaluate(
    *, docs: Path, queries: Path, rankings: Path, cache: Path, query_from: str = "annotations"
) -> dict[str, Any]:
    from services.packet.kb.loader import load_dir
    from services.packet.kb.search import RunbookIndex, tokens

    books = load_dir(docs)
    cases = read_queries(queries, docs, query_from)
    paths = [p for p, _ in books]
    embedder = Embedder(store=cache)
    t = time.perf_counter()
    index = RunbookIndex([r for _, r in books], embedder.encode)
    build_s = time.perf_counter() - t
    ours: list[int | None] = []
    lexical: list[int | None] = []
    times = []
    rankings.parent.mkdir(parents=True, exist_ok=True)
    with rankings.open("w") as out:
        for alert, text, expected in cases:
            t = time.perf_counter()
            hits = index.search(text, k=len(paths))
            times.append(time.perf_counter() - t)
            ranked = [paths[h.doc] for h in hits]
            out.write(json.dumps({"alert": alert, "ranked": ranked}) + "\n")
            ours.append(ranked.index(expected) + 1 if expected in ranked else None)
            bm25 = np.argsort(-index.doc_lex.scores(tokens(text)), kind="stable")
            base = [paths[i] for i in bm25]
            lexical.append(base.index(expected) + 1 if expected in base else None)
    ms = sorted(x * 1000 for x in times)
    return {
        "eval": "runbooks",
        "documents": len(paths),
        "sections": len(index.section_owner),
        "queries": len(cases),
        "query_from": query_from,
        "method": "reciprocal-rank fusion of document BM25, best-section BM25 and best-section "
        "MiniLM cosine (identifier-aware tokens)",
        **_figures(ours),
        "p50_ms_per_query": round(ms[len(ms) // 2], 1),
        "index_seconds": round(build_s, 1),
        "baseline_bm25": _figures(lexical),
        "rankings": str(rankings),
    }
