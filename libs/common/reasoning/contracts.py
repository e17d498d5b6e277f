"""The judgements' contracts: each judgement's input and output models, the check of an output
against its input (a label among the candidates, sources that were given, actions and
parameters the catalogue has), and the system text Claude is given for it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, Field

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
