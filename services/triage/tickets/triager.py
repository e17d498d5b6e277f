"""Ticket triage decisions, local path: category, intent and priority of a ticket with their
confidence and evidence, and the tenant's most similar resolved cases. No I/O: the caller
supplies embeddings and the open signals, and persists what it needs.

Each tenant has its own case memory (its resolved tickets with their final category) and, once
that history is large enough, its own model; until then a global model decides, one trained
on material marked global (never on another tenant's tickets). A case taken in counts at once
for similar-case retrieval and for the neighbours' vote; the tenant's linear model is retrained
in the background as its history grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from libs.common.embeddings import DIMENSIONS
from libs.common.events import Claim, Decision, RolloutMode, SimilarCase, Source, TicketSnapshot
from services.triage.tickets import priority
from services.triage.tickets.intents import IntentMatcher
from services.triage.tickets.model import TicketClassifier


@dataclass(frozen=True)
class TriageConfig:
    min_history: int = 50  # labelled cases (of at least two categories) before a tenant model
    retrain_growth: float = 0.1  # retrain once the history grew by this share...
    retrain_min_new: int = 20  # ...and by at least this many cases
    abstain_below: float = 0.5  # category confidence under which the local path abstains
    similar_k: int = 5
    default_mode: RolloutMode = "shadow"  # a tenant's rollout mode until an operator sets one
    auto_threshold: float = 0.9  # confidence at or above which `auto` acts


def ticket_text(ticket: TicketSnapshot) -> str:
    return f"{ticket.title}\n{ticket.description}".strip()


def snapshot_of(ticket_id: str, text: str, **fields: object) -> TicketSnapshot:
    """A ticket from one piece of text (a CSV row, a message): its first line, up to 200
    characters at a word boundary, is the title; the rest the description."""
    text = text.strip()
    first, _, rest = text.partition("\n")
    if len(first) > 200:
        cut = first.rfind(" ", 0, 200)
        cut = cut if cut > 0 else 200
        first, rest = first[:cut], (first[cut:] + "\n" + rest).strip()
    return TicketSnapshot(ticket_id=ticket_id, title=first or "(no title)", description=rest, **fields)


@dataclass(frozen=True)
class Case:
    ticket_id: str
    text: str
    category: str | None
    priority: str | None
    resolution: str
    url: str | None


class TenantCases:
    """One tenant's resolved cases: the similar-case index and what its model learns from."""

    def __init__(self, tenant_id: str, dim: int = DIMENSIONS) -> None:
        self.tenant_id = tenant_id
        self.cases: list[Case] = []
        self.position: dict[str, int] = {}
        self._vectors = np.zeros((64, dim), dtype=np.float32)
        self._labels = np.zeros(64, dtype=np.int64)  # class index under `model`, -1 unknown
        self.model: TicketClassifier | None = None
        self.trained_on = 0  # cases in memory when the model was trained
        self.training = False

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: len(self.cases)]

    @property
    def labels(self) -> np.ndarray:
        return self._labels[: len(self.cases)]

    def similarities(self, vector: np.ndarray) -> np.ndarray:
        """Cosine similarity of a unit vector to every case, in case order."""
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        return self._vectors[: len(self.cases)] @ query

    def add(self, case: Case, vector: np.ndarray) -> bool:
        """Take a case in (or update it: a ticket resolved again replaces its earlier case).
        False when nothing changed."""
        row = self.position.get(case.ticket_id)
        if row is not None:
            if self.cases[row] == case:
                return False
            self.cases[row] = case
        else:
            row = len(self.cases)
            if row == len(self._vectors):
                self._vectors = np.concatenate([self._vectors, np.zeros_like(self._vectors)])
                self._labels = np.concatenate([self._labels, np.zeros_like(self._labels)])
            self.cases.append(case)
            self.position[case.ticket_id] = row
        self._vectors[row] = vector
        self._labels[row] = self.model.label_index([case.category])[0] if self.model is not None else -1
        return True

    def categories(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.cases:
            if c.category:
                counts[c.category] = counts.get(c.category, 0) + 1
        return counts

    def can_learn(self, config: TriageConfig) -> bool:
        labelled = self.categories()
        return sum(labelled.values()) >= config.min_history and len(labelled) >= 2

    def wants_training(self, config: TriageConfig) -> bool:
        if self.training or not self.can_learn(config):
            return False
        if self.model is None:
            return True
        grown = len(self) - self.trained_on
        return grown >= config.retrain_min_new and grown >= config.retrain_growth * self.trained_on

    def training_set(self) -> tuple[list[str], list[str], np.ndarray, int]:
        rows = [i for i, c in enumerate(self.cases) if c.category]
        return (
            [self.cases[i].text for i in rows],
            [self.cases[i].category for i in rows],  # type: ignore[misc]
            self.vectors[rows].copy(),
            len(self.cases),
        )

    def install(self, model: TicketClassifier, trained_on: int) -> None:
        self.model = model
        self.trained_on = trained_on
        self._labels[: len(self.cases)] = model.label_index([c.category for c in self.cases])


def train(texts: Sequence[str], labels: Sequence[str], vectors: np.ndarray) -> TicketClassifier:
    return TicketClassifier().fit(texts, labels, vectors)


@dataclass(frozen=True)
class Triage:
    category: Decision
    intent: Decision
    priority: Decision
    similar_cases: list[SimilarCase]
    needs_human: bool
    candidates: list[tuple[str, float]]  # categories the model weighed, best first (for a review or the LLM)
    neighbours: list[tuple[Case, float]] = field(default_factory=list)


class TicketTriager:
    def __init__(self, config: TriageConfig, global_model: TicketClassifier) -> None:
        self.config = config
        self.global_model = global_model
        self.tenants: dict[str, TenantCases] = {}

    def cases(self, tenant_id: str) -> TenantCases:
        found = self.tenants.get(tenant_id)
        if found is None:
            found = self.tenants[tenant_id] = TenantCases(tenant_id, self.global_model.train_vectors.shape[1])
        return found

    def classify(
        self,
        tenant_id: str,
        ticket: TicketSnapshot,
        vector: np.ndarray,
        intents: IntentMatcher,
        open_signals: Sequence[tuple[str, str]] = (),
    ) -> Triage:
        text = ticket_text(ticket)
        own = self.cases(tenant_id)
        query = vector.reshape(1, -1).astype(np.float32)
        sims = own.similarities(query)[None, :]  # for the vote and for similar cases at once
        model = own.model
        if model is not None:
            method = "tenant_model"
            pred = model.predict([text], query, memory=(sims, own.labels))[0]
        else:
            method = "global_model"
            model = self.global_model
            pred = model.predict([text], query)[0]
        neighbours = nearest(own, sims[0], self.config.similar_k * 2, exclude=ticket.ticket_id)
        similar = [
            SimilarCase(
                ticket_id=c.ticket_id,
                score=round(float(np.clip(s, 0.0, 1.0)), 4),
                resolution_summary=c.resolution,
                url=c.url,
                category=c.category,
            )
            for c, s in neighbours[: self.config.similar_k]
        ]
        candidates = sorted(pred.scores.items(), key=lambda kv: -kv[1])[:3]
        terms = model.evidence_terms(text, pred.label)
        category = self._category(ticket, pred.label, pred.confidence, method, terms, neighbours)
        match = intents.match([text], query)[0]
        if match.intent is None:
            intent = Decision(label=None, confidence=round(match.confidence, 4), method="intent_catalogue")
        else:
            intent = Decision(
                label=match.intent.name,
                confidence=round(match.confidence, 4),
                method="intent_catalogue",
                rationale=Claim(
                    text=_clip(
                        f"resembles '{match.example}'"
                        + (f"; mentions {', '.join(match.matched_terms)}" if match.matched_terms else "")
                    ),
                    confidence=round(match.confidence, 4),
                    sources=[_self_source(ticket, ", ".join(match.matched_terms) or (match.example or ""))],
                ),
            )
        call = priority.decide(
            text, open_signals, [(c.ticket_id, c.priority, s) for c, s in neighbours if c.priority]
        )
        prio_sources = [Source(kind="signal", id=s) for s in call.evidence if call.method == "signals"] or [
            _case_source(own.cases[own.position[t]]) for t in call.evidence if t in own.position
        ]
        prio = Decision(
            label=call.label,
            confidence=call.confidence,
            method=f"priority_{call.method}",
            rationale=Claim(
                text=_clip(call.because),
                confidence=call.confidence,
                sources=prio_sources[:5] or [_self_source(ticket, call.because)],
            ),
        )
        return Triage(
            category=category,
            intent=intent,
            priority=prio,
            similar_cases=similar,
            needs_human=category.label is None,
            candidates=[(c, round(s, 4)) for c, s in candidates],
            neighbours=neighbours,
        )

    def _category(
        self,
        ticket: TicketSnapshot,
        label: str,
        confidence: float,
        method: str,
        terms: list[str],
        neighbours: list[tuple[Case, float]],
    ) -> Decision:
        agreeing = [(c, s) for c, s in neighbours[: self.config.similar_k] if c.category == label]
        parts = []
        if agreeing:
            parts.append(
                f"{len(agreeing)} of the {min(len(neighbours), self.config.similar_k)} most similar cases"
            )
        if terms:
            parts.append("terms " + ", ".join(repr(t) for t in terms))
        sources = [_case_source(c) for c, _ in agreeing] or [_self_source(ticket, ", ".join(terms))]
        confidence = round(confidence, 4)
        if confidence < self.config.abstain_below:
            return Decision(
                label=None,
                confidence=confidence,
                method=f"abstained:{method}",
                rationale=Claim(
                    text=_clip(f"best guess {label} at {confidence:.2f}, under {self.config.abstain_below}"),
                    confidence=confidence,
                    sources=sources,
                ),
            )
        because = "; ".join(parts) or "the model's weights"
        return Decision(
            label=label,
            confidence=confidence,
            method=method,
            rationale=Claim(text=_clip(f"{label}: {because}"), confidence=confidence, sources=sources),
        )


def nearest(cases: TenantCases, sims: np.ndarray, k: int, *, exclude: str) -> list[tuple[Case, float]]:
    if sims.size == 0:
        return []
    n = min(k + 1, sims.size)  # one spare: the ticket itself may be a case already
    top = np.argpartition(-sims, n - 1)[:n]
    top = top[np.argsort(-sims[top])]
    return [(cases.cases[i], float(sims[i])) for i in top if cases.cases[i].ticket_id != exclude][:k]


def _case_source(case: Case) -> Source:
    return Source(kind="ticket", id=case.ticket_id, url=case.url, excerpt=_clip(case.text, 300))


def _self_source(ticket: TicketSnapshot, excerpt: str) -> Source:
    return Source(kind="ticket", id=ticket.ticket_id, url=ticket.url, excerpt=_clip(excerpt, 300))


def _clip(text: str, limit: int = 1000) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
