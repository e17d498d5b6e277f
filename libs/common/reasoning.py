"""The platform's judgements behind one interface, with two implementations: Claude (through
`libs.common.llm`: tool use, validation, one repair, redaction, budget) and the local path
(embeddings, rules, extraction), which is always there.

A judgement has a pydantic input and output model and a `check` of the output against the
input (a label that is one of the candidates, sources that were given, actions that are in
the catalogue). Claude's answer that fails the check counts as invalid: it gets one repair,
then the local path decides instead; so does the local path when Claude is not configured.

    reasoning = Reasoning(claude, LocalReasoner(embed))
    plan, method = await reasoning.judge("interpret", tenant_id, InterpretInput(...))

Services register their own local implementation where they have a better one (triage's
classifier for `classify`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from libs.common.audit import AuditEmitter
from libs.common.llm import Claude, attempt, claude_from_settings
from libs.common.settings import ServiceSettings

I = TypeVar("I", bound=BaseModel)  # noqa: E741
O = TypeVar("O", bound=BaseModel)  # noqa: E741

Embed = Callable[[list[str]], np.ndarray]


class Evidence(BaseModel):
    """Something a judgement may cite: a key to cite it by, and what it is."""

    key: str = Field(min_length=1, max_length=200)
    kind: str = Field(max_length=40)
    id: str = Field(max_length=1000)
    excerpt: str = Field(default="", max_length=4000)


# --- classify -------------------------------------------------------------------------------------


class Candidate(BaseModel):
    label: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=1000)


class ClassifyInput(BaseModel):
    text: str = Field(min_length=1, max_length=20000)
    candidates: list[Candidate] = Field(min_length=1, max_length=200)
    context: list[Evidence] = Field(default_factory=list, max_length=20)


class ClassifyOutput(BaseModel):
    label: str = Field(description="one of the candidates' labels")
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str = Field(min_length=1, max_length=600)
    evidence: list[str] = Field(
        default_factory=list, max_length=10, description="keys of the context relied on"
    )


def _check_classify(data: ClassifyInput, out: ClassifyOutput) -> None:
    if out.label not in {c.label for c in data.candidates}:
        raise ValueError(f"label {out.label!r} is not one of the candidates")
    unknown = set(out.evidence) - {e.key for e in data.context}
    if unknown:
        raise ValueError(f"evidence {sorted(unknown)} was not given")


# --- summarise ------------------------------------------------------------------------------------


class SummariseInput(BaseModel):
    subject: str = Field(min_length=1, max_length=2000)
    sources: list[Evidence] = Field(min_length=1, max_length=50)
    max_sentences: int = Field(default=5, ge=1, le=10)


class Sentence(BaseModel):
    text: str = Field(min_length=1, max_length=600)
    sources: list[str] = Field(min_length=1, max_length=5, description="keys of the sources it rests on")


class SummariseOutput(BaseModel):
    sentences: list[Sentence] = Field(min_length=1, max_length=10)


def _check_summarise(data: SummariseInput, out: SummariseOutput) -> None:
    keys = {s.key for s in data.sources}
    for s in out.sentences:
        if not set(s.sources) <= keys:
            raise ValueError(f"sentence cites sources that were not given: {sorted(set(s.sources) - keys)}")
    if len(out.sentences) > data.max_sentences:
        raise ValueError(f"at most {data.max_sentences} sentences")


# --- interpret an instruction into a plan ------------------------------------------------------------


class ParamSpec(BaseModel):
    name: str
    kind: Literal["user", "email", "device", "group", "text", "boolean", "choice"]
    required: bool = True
    choices: list[str] = Field(default_factory=list, description="the allowed values of a choice")


class ActionSpec(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,99}$")
    description: str
    examples: list[str] = Field(default_factory=list)
    params: list[ParamSpec] = Field(default_factory=list)


class TicketContext(BaseModel):
    text: str = ""
    requester: str | None = None
    users: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)


class InterpretInput(BaseModel):
    instruction: str = Field(min_length=1, max_length=4000)
    ticket: TicketContext = Field(default_factory=TicketContext)
    catalogue: list[ActionSpec] = Field(min_length=1)


class PlanStep(BaseModel):
    action: str
    params: dict[str, str] = Field(default_factory=dict)
    why: str = Field(default="", max_length=600)


class InterpretOutput(BaseModel):
    steps: list[PlanStep] = Field(default_factory=list, max_length=20)
    confidence: float = Field(ge=0.0, le=1.0)
    unresolved: list[str] = Field(default_factory=list, description="parts of the instruction not mapped")


def _check_interpret(data: InterpretInput, out: InterpretOutput) -> None:
    specs = {a.name: a for a in data.catalogue}
    for step in out.steps:
        spec = specs.get(step.action)
        if spec is None:
            raise ValueError(f"action {step.action!r} is not in the catalogue")
        missing = [p.name for p in spec.params if p.required and not step.params.get(p.name)]
        if missing:
            raise ValueError(f"{step.action} lacks {missing}")
        extra = set(step.params) - {p.name for p in spec.params}
        if extra:
            raise ValueError(f"{step.action} has no parameters {sorted(extra)}")
        for p in spec.params:
            value = step.params.get(p.name)
            if value and p.choices and value not in p.choices:
                raise ValueError(f"{step.action}.{p.name} must be one of {p.choices}, not {value!r}")


# --- extract steps from a resolution -----------------------------------------------------------------


class RecordedAction(BaseModel):
    action: str
    params: dict[str, str] = Field(default_factory=dict)
    outcome: Literal["ok", "failed"]


class ExtractStepsInput(BaseModel):
    actions: list[RecordedAction] = Field(default_factory=list, max_length=200)
    resolution: str = Field(default="", max_length=20000)
    ticket: TicketContext = Field(default_factory=TicketContext)
    # Additive: the action names a step may use besides the recorded ones (steps read from the
    # resolution notes must still be catalogue actions).
    catalogue: list[str] = Field(default_factory=list, max_length=500)


class ExtractStepsOutput(BaseModel):
    steps: list[PlanStep] = Field(default_factory=list, max_length=50)


def _check_extract(data: ExtractStepsInput, out: ExtractStepsOutput) -> None:
    known = {a.action for a in data.actions} | set(data.catalogue)
    unknown = [s.action for s in out.steps if s.action not in known]
    if unknown:
        raise ValueError(f"steps {unknown} are neither recorded actions nor in the catalogue")


# --- analyse a failure -------------------------------------------------------------------------------

FailureCategory = Literal[
    "transient", "auth", "permission", "not_found", "conflict", "invalid_input", "unknown"
]


class AnalyseFailureInput(BaseModel):
    action: str
    error_class: str = Field(max_length=200)
    message: str = Field(default="", max_length=4000)
    attempt: int = Field(default=1, ge=1)
    # Additive: which step of the run failed, the connector's answer, the parameters it ran with
    # and the ticket, for an analysis that names the step and the value at fault.
    step: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    response: dict[str, Any] = Field(default_factory=dict)
    ticket: TicketContext | None = None


class AnalyseFailureOutput(BaseModel):
    category: FailureCategory
    retry: bool
    cause: str = Field(min_length=1, max_length=600)
    advice: str = Field(min_length=1, max_length=600)


def _no_check(_data: Any, _out: Any) -> None:
    return None


@dataclass(frozen=True)
class Judgement(Generic[I, O]):
    name: str
    input: type[I]
    output: type[O]
    system: str
    check: Callable[[I, O], None]
    # The part of the input that stays the same from call to call (an action catalogue):
    # Claude gets it as a cached system block, the rest as the question.
    reference: Callable[[I], tuple[str, str]] | None = None


JUDGEMENTS: dict[str, Judgement[Any, Any]] = {
    j.name: j
    for j in (
        Judgement(
            "classify",
            ClassifyInput,
            ClassifyOutput,
            "You classify IT service tickets for a managed service provider. Choose the label from "
            "the candidates only, say how sure you are (0 to 1), explain briefly and cite the keys "
            "of the context items you relied on. Never invent a label.",
            _check_classify,
        ),
        Judgement(
            "summarise",
            SummariseInput,
            SummariseOutput,
            "You summarise for an L2 engineer at a managed service provider what happened, in plain "
            "language, in at most max_sentences sentences. Each sentence cites the keys of the "
            "sources it rests on, from the sources given. Say nothing the sources do not support.",
            _check_summarise,
        ),
        Judgement(
            "interpret",
            InterpretInput,
            InterpretOutput,
            "You turn an engineer's instruction into a plan of actions from the catalogue only, "
            "filling each action's parameters from the instruction and the ticket. Use only actions "
            "and parameters the catalogue names; list what you could not map under unresolved. You "
            "never run anything: the plan is reviewed and approved by people. The catalogue follows.",
            _check_interpret,
            lambda d: (
                json.dumps({"catalogue": [a.model_dump() for a in d.catalogue]}, sort_keys=True),
                d.model_dump_json(exclude={"catalogue"}),
            ),
        ),
        Judgement(
            "extract_steps",
            ExtractStepsInput,
            ExtractStepsOutput,
            "You extract the reusable steps of a successful resolution from the actions recorded "
            "during it, or from the engineer's resolution notes, in order, without the failed "
            "attempts, using only recorded actions or the catalogue's action names, with the "
            "parameter values the notes or the ticket give.",
            _check_extract,
        ),
        Judgement(
            "analyse_failure",
            AnalyseFailureInput,
            AnalyseFailureOutput,
            "You analyse why an automated action failed, from the error class and message its "
            "connector raised: the category, whether retrying may help, the likely cause and what "
            "an engineer should do.",
            _no_check,
        ),
    )
}


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


def audit_fallback(
    audit: AuditEmitter, *, tenant_id: str, subject_kind: str, subject_id: str, cause_id: str
) -> Callable[[str, str], Awaitable[None]]:
    """An `on_fallback` that records in the audit trail that the local path decided, and why."""

    async def record(reason: str, detail: str) -> None:
        await audit.emit(
            tenant_id=tenant_id,
            action=f"{audit.service}.llm.fallback",
            subject_kind=subject_kind,
            subject_id=subject_id,
            cause_id=cause_id,
            outcome="failed",
            details={"reason": reason, "detail": detail[:500]},
        )

    return record


def reasoning_from_settings(
    settings: ServiceSettings, embed: Embed | None = None, engine: Engine | None = None
) -> Reasoning:
    """`engine`: the service's database, where the tenants' daily token budgets are kept."""
    return Reasoning(claude_from_settings(settings, engine), LocalReasoner(embed))


class Reasoning:
    """The judgements as services use them: Claude when configured, the local path always."""

    def __init__(self, claude: Claude | None, local: LocalReasoner) -> None:
        self.claude = claude
        self.local = local

    async def judge(
        self,
        judgement: str,
        tenant_id: str,
        data: BaseModel,
        *,
        on_fallback: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> tuple[BaseModel, str]:
        """(output, "claude" or "local"): Claude's checked answer, else the local path's."""
        answer = await self.ask_claude(judgement, tenant_id, data, on_fallback=on_fallback)
        if answer is not None:
            return answer, "claude"
        return await asyncio.to_thread(self.local.run, judgement, data), "local"

    async def ask_claude(
        self,
        judgement: str,
        tenant_id: str,
        data: BaseModel,
        *,
        on_fallback: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> BaseModel | None:
        """Claude's checked answer; None without Claude, or when it gave no valid answer (then
        `on_fallback` is told why, and the caller's own local result stands)."""
        spec = JUDGEMENTS[judgement]
        if not isinstance(data, spec.input):
            raise TypeError(f"{judgement} takes {spec.input.__name__}, not {type(data).__name__}")
        if self.claude is None:
            return None
        claude = self.claude

        reference, question = spec.reference(data) if spec.reference else (None, data.model_dump_json())

        async def ask() -> BaseModel:
            return await claude.judge(
                judgement=judgement,
                tenant_id=tenant_id,
                system=spec.system,
                prompt=question,
                output=spec.output,
                check=lambda out: spec.check(data, out),
                reference=reference,
            )

        return await attempt(judgement, ask, on_fallback)
