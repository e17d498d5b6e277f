"""The local path: every judgement answered inside the process, without a network call
(embedding matches, extraction, rules over the connectors' error classes). Always there: it
decides when Claude is not configured, or gave no valid answer."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from libs.common.reasoning.contracts import (
    JUDGEMENTS,
    ActionSpec,
    AnalyseFailureInput,
    AnalyseFailureOutput,
    ClassifyInput,
    ClassifyOutput,
    Embed,
    ExtractStepsInput,
    ExtractStepsOutput,
    FailureCategory,
    InterpretInput,
    InterpretOutput,
    PlanStep,
    Sentence,
    SummariseInput,
    SummariseOutput,
    TicketContext,
)


class LocalReasoner:
    """The local path: every judgement answered without a network call."""

    def __init__(self, embed: Embed | None = None) -> None:
        self._embed = embed
        self.implementations: dict[str, Callable[[Any], BaseModel]] = {
            "classify": self.classify,
            "summarise": summarise_locally,
            "interpret": self.interpret,
            "extract_steps": extract_steps_locally,
            "analyse_failure": analyse_failure_locally,
        }

    def register(self, judgement: str, implementation: Callable[[Any], BaseModel]) -> None:
        """A service's own local implementation (a trained model, say) for a judgement."""
        if judgement not in JUDGEMENTS:
            raise ValueError(f"no judgement {judgement!r}")
        self.implementations[judgement] = implementation

    def run(self, judgement: str, data: BaseModel) -> BaseModel:
        return self.implementations[judgement](data)

    @property
    def embed(self) -> Embed:
        if self._embed is None:
            from libs.common.embeddings import shared_embedder

            self._embed = shared_embedder().encode
        return self._embed

    def classify(self, data: ClassifyInput) -> ClassifyOutput:
        """The candidate whose label and description read most like the text."""
        vectors = self.embed([data.text] + [f"{c.label}. {c.description}" for c in data.candidates])
        sims = vectors[1:] @ vectors[0]
        order = np.argsort(-sims)
        best = data.candidates[int(order[0])]
        gap = float(sims[order[0]] - sims[order[1]]) if len(order) > 1 else float(sims[order[0]])
        confidence = round(float(np.clip(0.5 + 2 * gap, 0.05, 0.95)), 4)
        evidence: list[str] = []
        if data.context:
            ctx = self.embed([e.excerpt or e.id for e in data.context])
            evidence = [data.context[int((ctx @ vectors[0]).argmax())].key]
        return ClassifyOutput(
            label=best.label,
            confidence=confidence,
            rationale=f"reads most like '{best.label}' (similarity {sims[order[0]]:.2f})",
            evidence=evidence,
        )

    def interpret(self, data: InterpretInput) -> InterpretOutput:
        return interpret_locally(data, self.embed)


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def summarise_locally(data: SummariseInput) -> SummariseOutput:
    """The first sentence of each source, in the order given, each citing its source."""
    sentences = []
    for source in data.sources:
        first = _SENTENCE.split(" ".join(source.excerpt.split()))[0] if source.excerpt.strip() else ""
        if first:
            sentences.append(Sentence(text=first[:600], sources=[source.key]))
        if len(sentences) == data.max_sentences:
            break
    if not sentences:
        sentences = [Sentence(text=data.subject[:600], sources=[data.sources[0].key])]
    return SummariseOutput(sentences=sentences)


_VERBS = "reset|unlock|add|remove|disable|enable|restart|grant|revoke|create|delete|assign|send|clear|reboot"
# Where an instruction's clauses part: ";", "then", "also", ", and", and "and" before a verb.
_CLAUSES = re.compile(
    rf"\s*(?:;|\band then\b|\bthen\b|\band also\b|\balso\b|,\s*and\b|\band\b(?=\s+(?:{_VERBS})\b))\s*",
    re.I,
)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_QUOTED = re.compile(r"[\"'“‘]([^\"'”’]{2,100})[\"'”’]")
_GROUP = re.compile(
    r"\b(?:group|team|list|channel)\s+([A-Za-z0-9][\w .-]{1,60}?)(?=$|[,.;]|\s+(?:and|then|for)\b)", re.I
)
_USER = re.compile(r"\b(?:for|of|user)\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?|[a-z]+\.[a-z]+)\b")
MIN_MATCH = 0.35


def interpret_locally(data: InterpretInput, embed: Embed) -> InterpretOutput:
    """Each clause of the instruction matched to the catalogue action it reads most like (by
    its description and examples), parameters filled from the clause, then the ticket."""
    clauses = [c for c in _CLAUSES.split(data.instruction) if c and len(c.strip()) > 2]
    texts: list[str] = []
    owner: list[int] = []
    for n, action in enumerate(data.catalogue):
        for t in [action.description, *action.examples]:
            texts.append(t)
            owner.append(n)
    vectors = embed(texts + clauses)
    catalogue, asked = vectors[: len(texts)], vectors[len(texts) :]
    steps: list[PlanStep] = []
    unresolved: list[str] = []
    scores: list[float] = []
    for clause, vec in zip(clauses, asked, strict=True):
        sims = catalogue @ vec
        best = int(sims.argmax())
        if sims[best] < MIN_MATCH:
            unresolved.append(clause.strip())
            continue
        spec = data.catalogue[owner[best]]
        params, missing = _fill(spec, clause, data.ticket)
        if missing:
            unresolved.append(f"{clause.strip()} (no {', '.join(missing)} found)")
            continue
        steps.append(PlanStep(action=spec.name, params=params, why=f"reads like '{texts[best]}'"))
        scores.append(float(sims[best]))
    confidence = round(
        float(np.clip(min(scores) if scores else 0.0, 0.0, 1.0)) * (1.0 if not unresolved else 0.5), 4
    )
    return InterpretOutput(steps=steps, confidence=confidence, unresolved=unresolved)


def _fill(spec: ActionSpec, clause: str, ticket: TicketContext) -> tuple[dict[str, str], list[str]]:
    params: dict[str, str] = {}
    missing: list[str] = []
    for p in spec.params:
        value: str | None = None
        if p.kind == "email":
            found = _EMAIL.findall(clause)
            value = found[0] if found else (ticket.emails[0] if len(ticket.emails) == 1 else None)
        elif p.kind == "device":
            named = [d for d in ticket.devices if d.lower() in clause.lower()]
            value = named[0] if named else (ticket.devices[0] if len(ticket.devices) == 1 else None)
        elif p.kind == "group":
            m = _QUOTED.search(clause) or _GROUP.search(clause)
            value = m.group(1).strip() if m else None
        elif p.kind == "user":
            named = [u for u in ticket.users if u.lower() in clause.lower()]
            m = _USER.search(clause)
            value = named[0] if named else (m.group(1) if m else ticket.requester)
        else:
            m = _QUOTED.search(clause)
            value = m.group(1) if m else None
        if value:
            params[p.name] = value
        elif p.required:
            missing.append(p.name)
    return params, missing


def extract_steps_locally(data: ExtractStepsInput) -> ExtractStepsOutput:
    """The successful actions in order, repeats folded, ticket-specific values as placeholders."""
    placeholders = {}
    if data.ticket.requester:
        placeholders[data.ticket.requester] = "{requester}"
    for e in data.ticket.emails:
        placeholders[e] = "{email}"
    for d in data.ticket.devices:
        placeholders[d] = "{device}"
    steps: list[PlanStep] = []
    for a in data.actions:
        if a.outcome != "ok":
            continue
        params = {k: placeholders.get(v, v) for k, v in a.params.items()}
        step = PlanStep(action=a.action, params=params, why="succeeded during the resolution")
        if not steps or (steps[-1].action, steps[-1].params) != (step.action, step.params):
            steps.append(step)
    return ExtractStepsOutput(steps=steps)


_FAILURES: Sequence[tuple[str, FailureCategory, bool, str, str]] = [
    (
        r"timeout|timed out|temporar|unavailable|\b50[234]\b|connection (?:reset|refused|error)"
        r"|throttl|\b429\b|rate.?limit",
        "transient",
        True,
        "the target system was unreachable, slow or throttling",
        "retry with backoff; if it persists, check the system's status",
    ),
    (
        r"\b401\b|unauthori[sz]ed|invalid.?(?:token|credential|grant)|expired.?(?:token|secret)|authentication",
        "auth",
        False,
        "the connector's credentials were refused or expired",
        "renew the tenant's connector credentials",
    ),
    (
        r"\b403\b|forbidden|access.?denied|insufficient.?(?:privilege|permission)|not permitted",
        "permission",
        False,
        "the connector lacks a permission this action needs",
        "grant the connector the missing scope, or run the step by hand",
    ),
    (
        r"\b404\b|not.?found|no such|does not exist|unknown (?:user|object|group)",
        "not_found",
        False,
        "the user, device or group the action names does not exist there",
        "check the name against the directory; the ticket may name it differently",
    ),
    (
        r"\b409\b|conflict|already (?:exists|a member)|duplicate",
        "conflict",
        False,
        "the change is already in place or collides with another",
        "check the current state: the goal may already be met",
    ),
    (
        r"\b400\b|\b422\b|invalid|validation|malformed|bad request|policy",
        "invalid_input",
        False,
        "the request broke a rule of the target system",
        "correct the parameters (password policy, name format) and run again",
    ),
]


# Connector error classes that say the category outright.
_CLASSES: dict[str, FailureCategory] = {
    "not_found": "not_found",
    "throttled": "transient",
    "unavailable": "transient",
    "auth": "auth",
    "permission": "permission",
    "policy": "permission",
    "weak_password": "invalid_input",
    "invalid_input": "invalid_input",
    "locked": "conflict",
    "disabled": "conflict",
    "must_change": "conflict",
}


def analyse_failure_locally(data: AnalyseFailureInput) -> AnalyseFailureOutput:
    """From the error classes connectors raise (and the HTTP status in their message)."""
    where = f"step {data.step} " if data.step is not None else ""
    known = _CLASSES.get(data.error_class)
    if known is not None:
        row = next(r for r in _FAILURES if r[1] == known)
        detail = f" ({data.message[:200]})" if data.message else ""
        return AnalyseFailureOutput(
            category=known,
            retry=row[2] and data.attempt < 5,
            cause=f"{where}{data.action}: {row[3]}{detail}"[:600],
            advice=row[4],
        )
    text = f"{data.error_class} {data.message} {json.dumps(data.response)[:2000]}"
    for pattern, category, retry, cause, advice in _FAILURES:
        if re.search(pattern, text, re.IGNORECASE):
            return AnalyseFailureOutput(
                category=category,
                retry=retry and data.attempt < 5,
                cause=f"{where}{data.action}: {cause}",
                advice=advice,
            )
    return AnalyseFailureOutput(
        category="unknown",
        retry=False,
        cause=f"{where}{data.action}: {data.error_class} is not a known failure",
        advice="read the connector's log for this run and handle it by hand",
    )
