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

The package: `contracts` (each judgement's models, check and system text), `local` (the local
path), and here the facade services call (`Reasoning`, `reasoning_from_settings`,
`audit_fallback`); the contracts' and the local path's names are importable from here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pydantic import BaseModel
from sqlalchemy import Engine

from libs.common.audit import AuditEmitter
from libs.common.llm import Claude, attempt, claude_from_settings
from libs.common.reasoning.contracts import (
    JUDGEMENTS,
    ActionSpec,
    AnalyseFailureInput,
    AnalyseFailureOutput,
    Candidate,
    ClassifyInput,
    ClassifyOutput,
    Embed,
    Evidence,
    ExtractStepsInput,
    ExtractStepsOutput,
    FailureCategory,
    InterpretInput,
    InterpretOutput,
    Judgement,
    ParamSpec,
    PlanStep,
    RecordedAction,
    Sentence,
    SummariseInput,
    SummariseOutput,
    TicketContext,
)
from libs.common.reasoning.local import (
    LocalReasoner,
    analyse_failure_locally,
    extract_steps_locally,
    interpret_locally,
    summarise_locally,
)
from libs.common.settings import ServiceSettings


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


__all__ = [
    "ActionSpec",
    "AnalyseFailureInput",
    "AnalyseFailureOutput",
    "Candidate",
    "ClassifyInput",
    "ClassifyOutput",
    "Embed",
    "Evidence",
    "ExtractStepsInput",
    "ExtractStepsOutput",
    "FailureCategory",
    "InterpretInput",
    "InterpretOutput",
    "JUDGEMENTS",
    "Judgement",
    "LocalReasoner",
    "ParamSpec",
    "PlanStep",
    "Reasoning",
    "RecordedAction",
    "Sentence",
    "SummariseInput",
    "SummariseOutput",
    "TicketContext",
    "analyse_failure_locally",
    "audit_fallback",
    "extract_steps_locally",
    "interpret_locally",
    "reasoning_from_settings",
    "summarise_locally",
]
