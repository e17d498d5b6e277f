"""Runbook search: a hybrid of lexical (BM25) and sentence-embedding scores over runbook
sections, ranking documents and naming the section that fits best.

Alert texts and runbooks speak in identifiers (`KubePodCrashLooping`, `node_filesystem_avail`):
the tokenizer splits them into their words and keeps the whole too, and drops template
expressions (`{{ $labels.pod }}`), which say nothing about the problem. A document's lexical
score is BM25 over the whole document; its semantic score is the best cosine between the query
and any of its sections (each embedded with the document's title and the heading path); BM25
is taken at both levels, the whole document and its best section. The three rankings are
fused by their reciprocal ranks, which needs no score calibration between methods and carries
over between collections.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np

from libs.common.embeddings import DIMENSIONS
from services.packet.kb.markdown import Runbook

_TEMPLATE = re.compile(r"\{\{.*?\}\}|\$labels\.\w+|\$value")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
STOP = frozenset(
    "a an and are as at be been but by can do does for from has have if in into is it its of on or "
    "that the their then there these this to was were when which while will with you your not no "
    "than more less has".split()
)
RRF_K = 60  # the usual constant of reciprocal-rank fusion: dampens the weight of the very top


def tokens(text: str) -> list[str]:
    """Lower-cased words; identifiers also as their parts (`KubePodCrashLooping` ->
    kubepodcrashlooping, kube, pod, crash, looping); template expressions dropped."""
    out: list[str] = []
    for raw in _WORD.findall(_TEMPLATE.sub(" ", text)):
        word = raw.lower()
        parts = [p.lower() for p in _CAMEL.findall(raw)]
        if len(parts) > 1:
            out.append(word)
            out.extend(p for p in parts if p not in STOP and len(p) > 1)
        elif word not in STOP and len(word) > 1:
            out.append(word)
    return [_stem(t) for t in out]


def _stem(word: str) -> str:
    """Plurals and the commonest verb endings only: "failing", "failed", "fails" -> "fail".
    Snowball's English stemmer (PyStemmer) was measured in its place and ranked worse on the
    kube-prometheus runbooks (Recall@1 0.902 against 0.929, MRR 0.942 against 0.954), so the
    light rule stays."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


class BM25:
    """Okapi BM25 (k1 1.2, b 0.75, Lucene's idf) over token lists, by `bm25s` (a sparse matrix
    of term weights). A query term counts once however often the query repeats it."""

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.size = len(docs)
        self._index = bm25s.BM25(k1=k1, b=b, method="lucene")
        if docs:
            self._index.index([list(d) for d in docs], show_progress=False)
            self.vocabulary: set[str] = set(self._index.vocab_dict)
        else:
            self.vocabulary = set()

    def scores(self, query: Sequence[str]) -> np.ndarray:
        terms = sorted({t for t in query if t in self.vocabulary})
        if not terms:
            return np.zeros(self.size)
        return np.asarray(self._index.get_scores(terms), dtype=np.float64)


@dataclass(frozen=True)
class Hit:
    doc: int  # index into the index's documents
    score: float
    section: int  # index into the document's sections: the best fitting one
    section_score: float  # cosine of the query and that section
    named: bool = False  # its title is a name the search was given (an alert's rule)


_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def name_key(text: str) -> str:
    """A name as compared with a runbook's title: case, spaces and separators ignored, so the
    rule `KubePodCrashLooping`, the title "Kube Pod Crash Looping" and `kube_pod_crash_looping`
    are one name."""
    return _NOT_ALNUM.sub("", text.lower())


class RunbookIndex:
    """One set of runbooks (a tenant's own plus the global library, say), searchable.

    `vectors`: the sections' embeddings in document and section order, when they are stored
    already (computed once, when a runbook is added); otherwise they are computed here."""

    def __init__(
        self,
        runbooks: Sequence[Runbook],
        embed: Callable[[list[str]], np.ndarray],
        vectors: np.ndarray | None = None,
    ) -> None:
        self.runbooks = list(runbooks)
        self.embed = embed
        self.section_owner = [(d, s) for d, r in enumerate(self.runbooks) for s in range(len(r.sections))]
        texts = [section_text(self.runbooks[d], s) for d, s in self.section_owner]
        self.owner = np.array([d for d, _ in self.section_owner], dtype=np.int64)
        self.doc_lex = BM25([tokens(f"{r.title}\n{r.text}") for r in self.runbooks])
        self.section_lex = BM25([tokens(t) for t in texts])
        if vectors is None:
            vectors = embed(texts) if texts else np.zeros((0, DIMENSIONS), dtype=np.float32)
        if len(vectors) != len(texts):
            raise ValueError(f"{len(vectors)} section vectors for {len(texts)} sections")
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.title_keys = [name_key(r.title) for r in self.runbooks]

    def search(self, query: str, k: int = 10, names: Sequence[str] = ()) -> list[Hit]:
        """The `k` best documents: reciprocal-rank fusion of the document's BM25, its best
        section's BM25 and its best section's embedding cosine. A document whose title is one
        of `names` (the rules of the alerts involved: a monitoring rule names its runbook, as
        Prometheus rules do by their `runbook_url`) comes before all others, best first."""
        if not self.runbooks or not self.section_owner:
            return []
        terms = tokens(query)
        sims = self.vectors @ self.embed([query])[0]
        sec_lex = self.section_lex.scores(terms)
        n = len(self.runbooks)
        semantic = np.full(n, -np.inf)
        np.maximum.at(semantic, self.owner, sims)
        passage = np.zeros(n)
        np.maximum.at(passage, self.owner, sec_lex)
        fused = _rrf(self.doc_lex.scores(terms)) + _rrf(passage) + _rrf(semantic)
        wanted = {key for key in map(name_key, names) if key}
        named = np.zeros(n, dtype=bool)
        if wanted:
            named[:] = [key in wanted for key in self.title_keys]
            fused = fused + named  # fused ranks sum to under 3 / 61: a name outranks them all
        # Within a document, the section that fits best by the same two passage rankings.
        per_section = _rrf(sec_lex) + _rrf(sims)
        best = np.full(n, -1)
        for row in np.argsort(-per_section, kind="stable"):
            d = self.owner[row]
            if best[d] < 0:
                best[d] = row
        order = np.argsort(-fused, kind="stable")[:k]
        return [
            Hit(
                doc=int(d),
                score=float(fused[d]),
                section=self.section_owner[int(best[d])][1],
                section_score=float(sims[int(best[d])]),
                named=bool(named[d]),
            )
            for d in order
        ]


def section_text(runbook: Runbook, index: int) -> str:
    sec = runbook.sections[index]
    path = " / ".join(p for p in sec.path if p != runbook.title)
    return f"{runbook.title}. {path}\n{sec.text[:1500]}".strip()


def _rrf(scores: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(scores))
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    return 1.0 / (RRF_K + ranks)
