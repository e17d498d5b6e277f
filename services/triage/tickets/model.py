"""Ticket classification, local path: a linear model over lexical and sentence-embedding
features, blended with a vote of the most similar labelled tickets.

- Features: TF-IDF of words (1-2 grams) and characters (2-5 grams within words), and the
  ticket's all-MiniLM-L6-v2 embedding (scaled to weigh like the lexical part).
- Model: a linear SVM (one-vs-rest) on those features.
- Similar cases: the k nearest labelled tickets by embedding cosine; their labels vote,
  weighted by similarity. The vote and the model's scores are added with a weight chosen on a
  held-out slice of the training data.
- Confidence: the margin between the best and second-best blended score, calibrated on that
  same slice into the probability of being right (logistic fit), so "0.9" means right about
  nine times in ten on tickets like the training ones.

Embeddings are passed in (computed once, cached by normalised text by the caller).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

EMBEDDING_WEIGHT = 0.5
NEIGHBOURS = 10
BLEND_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)

# Cases to vote with instead of the training cases: (similarities of the queries to each
# case, each case's class index from `label_index`, -1 for a label the model does not know).
Memory = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    scores: dict[str, float]
    neighbours: list[tuple[int, float]]  # (training row, cosine similarity), best first


class TicketClassifier:
    def __init__(self, *, C: float = 0.3, neighbours: int = NEIGHBOURS, char_ngrams: bool = True) -> None:
        self.C = C
        self.k = neighbours
        self.char_ngrams = char_ngrams
        self.blend = 1.0
        self._calibration: LogisticRegression | None = None

    # --- training ---------------------------------------------------------------------

    def fit(
        self, texts: Sequence[str], labels: Sequence[str], vectors: np.ndarray, *, seed: int = 42
    ) -> TicketClassifier:
        if len(texts) != len(labels) or len(texts) != len(vectors):
            raise ValueError("texts, labels and vectors must have the same length")
        y = np.asarray(labels, dtype=object)
        counts = {c: int((y == c).sum()) for c in set(y.tolist())}
        if len(counts) < 2:
            raise ValueError("need tickets of at least two labels to learn from")
        if len(y) < 10 * len(counts) or min(counts.values()) < 2:
            # Too little to hold any out (a small global corpus): learn from all of it, with
            # the default blend and an uncalibrated confidence.
            self.blend, self._calibration = 1.0, None
            self._fit_core(list(texts), y, vectors)
            return self
        # Hold out a slice to choose the blend weight and calibrate the confidence.
        stratify = y
        fit_idx, hold_idx = train_test_split(
            np.arange(len(y)), test_size=0.1, random_state=seed, stratify=stratify
        )
        self._fit_core([texts[i] for i in fit_idx], y[fit_idx], vectors[fit_idx])
        scores, votes, _, _ = self._scores([texts[i] for i in hold_idx], vectors[hold_idx])
        truth = y[hold_idx]
        best = max(BLEND_WEIGHTS, key=lambda a: self._macro_f1(truth, scores + a * votes))
        self.blend = best
        blended = scores + best * votes
        gap = margin(blended)
        right = self.classes_[blended.argmax(1)] == truth
        if right.all() or not right.any():
            self._calibration = None
        else:
            self._calibration = LogisticRegression().fit(gap.reshape(-1, 1), right)
        # Then learn from everything.
        self._fit_core(list(texts), y, vectors)
        return self

    def _fit_core(self, texts: Sequence[str], y: np.ndarray, vectors: np.ndarray) -> None:
        self.words = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
        self.chars = TfidfVectorizer(
            sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 5), min_df=2, max_features=300_000
        )
        # Classes weighted inversely to their frequency: in a long tail (dozens of groups with
        # a handful of tickets each) an unweighted hinge loss lets the frequent groups swallow
        # the rare ones (README, "--few-shot").
        self.svm = LinearSVC(C=self.C, class_weight="balanced").fit(
            self._features(texts, vectors, fit=True), y
        )
        self._vocabulary: np.ndarray | None = None
        self.classes_ = self.svm.classes_
        self.train_vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = {c: i for i, c in enumerate(self.classes_)}
        self.train_labels = np.array([index[c] for c in y])

    def _features(self, texts: Sequence[str], vectors: np.ndarray, *, fit: bool = False) -> csr_matrix:
        lexical = [self.words, self.chars] if self.char_ngrams else [self.words]
        parts = [v.fit_transform(texts) if fit else v.transform(texts) for v in lexical]
        parts.append(csr_matrix(vectors * EMBEDDING_WEIGHT))
        return hstack(parts).tocsr()

    def _scores(
        self, texts: Sequence[str], vectors: np.ndarray, memory: Memory | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The model's scores, the similar-case votes, and those cases with their similarity."""
        scores = self.svm.decision_function(self._features(texts, vectors))
        if scores.ndim == 1:  # two classes: one column, for the second class
            scores = np.stack([-scores, scores], axis=1)
        return (scores, *self._votes(vectors, memory))

    def label_index(self, labels: Sequence[str | None]) -> np.ndarray:
        """Class index of each label; -1 for a label the model has not learned (yet)."""
        index = {c: i for i, c in enumerate(self.classes_)}
        return np.array([index.get(x, -1) if x is not None else -1 for x in labels], dtype=np.int64)

    def _votes(
        self, vectors: np.ndarray, memory: Memory | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # The vote runs over the live case memory when one is given (cases learned since the
        # model was trained count at once), else over the training cases.
        if memory is None:
            sims, mem_labels = vectors.astype(np.float32) @ self.train_vectors.T, self.train_labels
        else:
            sims, mem_labels = memory
        if sims.shape[1] == 0:
            empty = np.zeros((len(vectors), 0), dtype=np.int64)
            return np.zeros((len(vectors), len(self.classes_))), empty, empty.astype(np.float32)
        k = min(self.k, sims.shape[1])
        nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        rows = np.arange(len(vectors))[:, None]
        order = np.argsort(-sims[rows, nn], axis=1)
        nn = nn[rows, order]
        votes = np.zeros((len(vectors), len(self.classes_)))
        labels = mem_labels[nn]
        weights = np.where(labels >= 0, np.clip(sims[rows, nn], 0.0, None), 0.0)
        np.add.at(votes, (np.repeat(np.arange(len(vectors)), k), labels.clip(0).ravel()), weights.ravel())
        total = votes.sum(axis=1, keepdims=True)
        return np.divide(votes, total, out=np.zeros_like(votes), where=total > 0), nn, sims[rows, nn]

    def _macro_f1(self, truth: np.ndarray, scores: np.ndarray) -> float:
        from sklearn.metrics import f1_score

        return float(f1_score(truth, self.classes_[scores.argmax(1)], average="macro"))

    # --- use ----------------------------------------------------------------------------

    def predict(
        self, texts: Sequence[str], vectors: np.ndarray, memory: Memory | None = None
    ) -> list[Prediction]:
        """`memory`: the cases to vote with and name as neighbours (see `Memory`); the
        training cases when not given."""
        scores, votes, nn, nn_sims = self._scores(texts, vectors, memory)
        blended = scores + self.blend * votes
        confidence = self.confidence(blended)
        out = []
        for i in range(len(texts)):
            best = int(blended[i].argmax())
            neighbours = [(int(j), float(sim)) for j, sim in zip(nn[i], nn_sims[i], strict=True)]
            out.append(
                Prediction(
                    label=str(self.classes_[best]),
                    confidence=float(confidence[i]),
                    scores={str(c): float(blended[i, j]) for j, c in enumerate(self.classes_)},
                    neighbours=neighbours,
                )
            )
        return out

    def without_training_cases(self) -> TicketClassifier:
        """A copy without the training cases' vectors (the service votes over its live case
        memory instead): what is worth storing."""
        import copy

        light = copy.copy(self)
        light.train_vectors = np.zeros((0, self.train_vectors.shape[1]), dtype=np.float32)
        light.train_labels = np.zeros(0, dtype=np.int64)
        return light

    # --- storage: arrays and JSON, never pickle (loading must not be able to run code) ----

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted model as plain arrays (numbers and strings), without the training cases:
        what `from_arrays` rebuilds it from."""
        meta = {
            "format": MODEL_FORMAT,
            "C": self.C,
            "k": self.k,
            "char_ngrams": self.char_ngrams,
            "blend": self.blend,
            "words": _vectorizer_params(self.words),
            "chars": _vectorizer_params(self.chars) if self.char_ngrams else None,
            "calibrated": self._calibration is not None,
            "dimensions": int(self.train_vectors.shape[1]),
        }
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "classes": np.asarray(self.classes_, dtype=str),
            "svm_coef": np.asarray(self.svm.coef_),
            "svm_intercept": np.asarray(self.svm.intercept_),
            "words_terms": _terms(self.words),
            "words_idf": np.asarray(self.words.idf_),
        }
        if self.char_ngrams:
            arrays["chars_terms"] = _terms(self.chars)
            arrays["chars_idf"] = np.asarray(self.chars.idf_)
        if self._calibration is not None:
            arrays["cal_coef"] = np.asarray(self._calibration.coef_)
            arrays["cal_intercept"] = np.asarray(self._calibration.intercept_)
            arrays["cal_classes"] = np.asarray(self._calibration.classes_)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> TicketClassifier:
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != MODEL_FORMAT:
            raise ValueError(f"not a stored ticket model of format {MODEL_FORMAT}: {meta.get('format')!r}")
        model = cls(C=float(meta["C"]), neighbours=int(meta["k"]), char_ngrams=bool(meta["char_ngrams"]))
        model.blend = float(meta["blend"])
        classes = np.asarray(arrays["classes"]).astype(object)
        svm = LinearSVC(C=model.C)
        svm.coef_ = np.asarray(arrays["svm_coef"])
        svm.intercept_ = np.asarray(arrays["svm_intercept"])
        svm.classes_ = classes
        svm.n_features_in_ = svm.coef_.shape[1]
        model.svm = svm
        model.classes_ = classes
        model.words = _vectorizer(meta["words"], arrays["words_terms"], arrays["words_idf"])
        if model.char_ngrams:
            model.chars = _vectorizer(meta["chars"], arrays["chars_terms"], arrays["chars_idf"])
        model._vocabulary = None
        if meta["calibrated"]:
            cal = LogisticRegression()
            cal.coef_ = np.asarray(arrays["cal_coef"])
            cal.intercept_ = np.asarray(arrays["cal_intercept"])
            cal.classes_ = np.asarray(arrays["cal_classes"])
            cal.n_features_in_ = 1
            model._calibration = cal
        model.train_vectors = np.zeros((0, int(meta["dimensions"])), dtype=np.float32)
        model.train_labels = np.zeros(0, dtype=np.int64)
        return model

    def evidence_terms(self, text: str, label: str, limit: int = 3) -> list[str]:
        """The words and word pairs of `text` that weigh most for `label` in the linear model."""
        where = np.flatnonzero(self.classes_ == label)
        if not len(where):
            return []
        row = self.words.transform([text])
        if len(self.classes_) == 2:  # one weight vector, for the second class
            coef = self.svm.coef_[0] * (1 if where[0] == 1 else -1)
        else:
            coef = self.svm.coef_[where[0]]
        weights = row.data * coef[row.indices]
        order = np.argsort(-weights)[:limit]
        if self._vocabulary is None:
            self._vocabulary = self.words.get_feature_names_out()
        return [str(self._vocabulary[row.indices[i]]) for i in order if weights[i] > 0]

    def confidence(self, blended: np.ndarray) -> np.ndarray:
        gap = margin(blended)
        if self._calibration is None:
            return np.asarray(1.0 - 1.0 / (1.0 + np.clip(gap, 0.0, None)))
        return np.asarray(self._calibration.predict_proba(gap.reshape(-1, 1))[:, 1])


MODEL_FORMAT = "msp-ticket-model/1"
_VECTORIZER_PARAMS = (
    "sublinear_tf",
    "ngram_range",
    "min_df",
    "analyzer",
    "max_features",
    "lowercase",
    "norm",
)


def _vectorizer_params(v: TfidfVectorizer) -> dict[str, Any]:
    params = v.get_params()
    return {k: list(params[k]) if isinstance(params[k], tuple) else params[k] for k in _VECTORIZER_PARAMS}


def _terms(v: TfidfVectorizer) -> np.ndarray:
    """The vocabulary as an array of terms, each at its feature index."""
    terms = np.empty(len(v.vocabulary_), dtype=object)
    for term, i in v.vocabulary_.items():
        terms[i] = term
    return terms.astype(str)


def _vectorizer(params: dict[str, Any], terms: np.ndarray, idf: np.ndarray) -> TfidfVectorizer:
    v = TfidfVectorizer(**{**params, "ngram_range": tuple(params["ngram_range"])})
    v.vocabulary_ = {str(t): i for i, t in enumerate(terms.tolist())}
    v.fixed_vocabulary_ = False
    v.idf_ = np.asarray(idf, dtype=np.float64)
    return v


def margin(scores: np.ndarray) -> np.ndarray:
    """Best score minus the runner-up, per row (the best score alone with one column)."""
    if scores.shape[1] < 2:
        return np.asarray(scores[:, 0])
    top2 = np.sort(scores, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0])
