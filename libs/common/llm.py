"""Structured judgements from Claude through the `anthropic` SDK, with the local path behind it.

A judgement is a pydantic output model. Claude is asked for it with tool use: the tool's JSON
schema is generated from the model and the tool choice is forced, so the answer is the tool's
input. The answer is validated; an invalid one gets one repair attempt (the validation errors
are sent back), and then the caller's local implementation decides instead, with an audit event
saying so. Secrets and personal data are redacted before the prompt leaves the process and
restored in the answer. Timeouts and retries with backoff on 429/5xx are the SDK's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anthropic
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError
from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from libs.common.redaction import Redacted, Redactor
from libs.common.settings import ServiceSettings

log = logging.getLogger(__name__)

LLM_CALLS = Counter("msp_llm_calls_total", "Calls to the LLM", ["judgement", "outcome"])
LLM_SECONDS = Histogram("msp_llm_seconds", "Latency of LLM calls", ["judgement"])
LLM_TOKENS = Counter("msp_llm_tokens_total", "Tokens used", ["judgement", "direction"])
_BUDGET_REFUSED = Counter(
    "msp_llm_budget_refusals_total", "Questions not sent to Claude: the tenant's daily token budget was spent"
)
LLM_FALLBACKS = Counter(
    "msp_llm_fallbacks_total", "Judgements the local path made instead", ["judgement", "reason"]
)

M = TypeVar("M", bound=BaseModel)


class JudgementFailed(Exception):
    """Claude gave no valid answer (API error, timeout, budget, invalid twice)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class ClaudeConfig:
    api_key: str
    model: str
    base_url: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 2
    max_tokens: int = 1024
    tenant_token_budget: int = 200_000  # input + output tokens per tenant per UTC day


def claude_from_settings(settings: ServiceSettings, engine: Engine | None = None) -> Claude | None:
    """Claude as the settings configure it, or None (the local path) without an API key.
    With the service's database `engine`, the tenants' token budgets are kept there, shared by
    every process of the service."""
    if settings.anthropic_api_key is None or not settings.anthropic_api_key.get_secret_value():
        return None
    config = ClaudeConfig(
        api_key=settings.anthropic_api_key.get_secret_value(),
        model=settings.claude_model,
        base_url=settings.anthropic_base_url,
        timeout_s=settings.llm_timeout_s,
        tenant_token_budget=settings.llm_tenant_token_budget,
    )
    budget = TokenBudget(config.tenant_token_budget, engine, usage_table(MetaData(), settings.service_name))
    return Claude(config, budget=budget)


def usage_table(metadata: MetaData, service: str) -> Table:
    """Tokens spent per tenant per UTC day (created by each service's migrations)."""
    return Table(
        f"{service}_llm_usage",
        metadata,
        Column("tenant_id", String(63), primary_key=True),
        Column("day", String(10), primary_key=True),
        Column("tokens", BigInteger, nullable=False),
    )


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


class TokenBudget:
    """Input and output tokens a tenant may spend on Claude per UTC day. Kept in the service's
    database when it has one, so every process of the service draws on one budget (in memory
    otherwise: one process, for tests and tools)."""

    def __init__(
        self,
        limit: int,
        engine: Engine | None = None,
        table: Table | None = None,
        today: Callable[[], str] = _today,
    ) -> None:
        self.limit = limit
        self.engine = engine
        self.table = table
        self.today = today
        self.used: dict[tuple[str, str], int] = {}

    def _used(self, tenant_id: str) -> int:
        day = self.today()
        if self.engine is None or self.table is None:
            return self.used.get((tenant_id, day), 0)
        with self.engine.connect() as conn:
            found = conn.execute(
                select(self.table.c.tokens).where(
                    self.table.c.tenant_id == tenant_id, self.table.c.day == day
                )
            ).scalar()
        return int(found or 0)

    async def check(self, tenant_id: str) -> None:
        used = await asyncio.to_thread(self._used, tenant_id)
        if used >= self.limit:
            _BUDGET_REFUSED.inc()
            raise JudgementFailed("budget", f"tenant {tenant_id} used its {self.limit} tokens of today")

    def _spend(self, tenant_id: str, tokens: int) -> None:
        day = self.today()
        if self.engine is None or self.table is None:
            self.used[(tenant_id, day)] = self.used.get((tenant_id, day), 0) + tokens
            return
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(self.table).values(tenant_id=tenant_id, day=day, tokens=tokens)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "day"], set_={"tokens": self.table.c.tokens + stmt.excluded.tokens}
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    async def spend(self, tenant_id: str, tokens: int) -> None:
        await asyncio.to_thread(self._spend, tenant_id, tokens)


class Claude:
    def __init__(
        self, config: ClaudeConfig, redactor: Redactor | None = None, budget: TokenBudget | None = None
    ) -> None:
        self.config = config
        self.redactor = redactor or Redactor()
        self.budget = budget or TokenBudget(config.tenant_token_budget)
        self.client = anthropic.AsyncAnthropic(
            api_key=config.api_key,
            base_url=config.base_url,
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )

    async def judge(
        self,
        *,
        judgement: str,
        tenant_id: str,
        system: str,
        prompt: str,
        output: type[M],
        check: Callable[[M], None] | None = None,
        reference: str | None = None,
    ) -> M:
        """Ask for one judgement; returns the validated model or raises `JudgementFailed`.
        `check` holds the answer to its question (a label among the candidates, say): its
        ValueError counts like a validation error, with one repair. `reference` is material
        that stays the same from call to call (an action catalogue): sent as a cached system
        block rather than with every question."""
        await self.budget.check(tenant_id)
        # Finding names runs a model for a few milliseconds: off the event loop.
        redacted = await asyncio.to_thread(
            self.redactor.redact, prompt if reference is None else f"{reference}\n\x1e\n{prompt}"
        )
        reference_text = None
        if reference is not None:
            reference_text, _, asked = redacted.text.partition("\n\x1e\n")
            redacted = Redacted(asked, redacted.mapping)
        tool = {
            "name": judgement,
            "description": f"Record the {judgement} judgement.",
            "input_schema": output.model_json_schema(),
        }
        # The system text and the tool schema are stable across calls: cache them.
        system_blocks = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
        if reference_text is not None:
            system_blocks.append(
                {"type": "text", "text": reference_text, "cache_control": {"type": "ephemeral"}}
            )
        messages: list[dict[str, Any]] = [{"role": "user", "content": redacted.text}]
        started = time.perf_counter()
        try:
            for attempt in (1, 2):
                message = await self._call(judgement, tenant_id, system_blocks, tool, messages)
                block = next(
                    (b for b in message.content if b.type == "tool_use" and b.name == judgement), None
                )
                if block is None:
                    error = "the answer held no tool_use block"
                else:
                    try:
                        answer = output.model_validate(_restore(block.input, redacted))
                        if check is not None:
                            check(answer)
                        return answer
                    except ValidationError as exc:
                        error = exc.json(include_url=False)
                    except ValueError as exc:
                        error = str(exc)
                if attempt == 1:
                    # One repair: show the model what was wrong with its answer.
                    messages += [
                        {"role": "assistant", "content": [b.model_dump() for b in message.content]},
                        {"role": "user", "content": _repair_content(block, error)},
                    ]
            LLM_CALLS.labels(judgement, "invalid").inc()
            raise JudgementFailed("invalid", error)
        finally:
            LLM_SECONDS.labels(judgement).observe(time.perf_counter() - started)

    async def _call(
        self,
        judgement: str,
        tenant_id: str,
        system: Any,
        tool: dict[str, Any],
        messages: list[dict[str, Any]],
    ) -> Any:
        try:
            message = await self.client.messages.create(  # type: ignore[call-overload]
                model=self.config.model,
                max_tokens=self.config.max_tokens,
                system=system,
                tools=[tool],
                tool_choice={"type": "tool", "name": judgement},
                messages=messages,
            )
        except anthropic.APITimeoutError as exc:
            LLM_CALLS.labels(judgement, "timeout").inc()
            raise JudgementFailed("timeout", str(exc)) from exc
        except anthropic.APIError as exc:
            LLM_CALLS.labels(judgement, "error").inc()
            raise JudgementFailed("api_error", str(exc)) from exc
        usage = message.usage
        LLM_TOKENS.labels(judgement, "in").inc(usage.input_tokens)
        LLM_TOKENS.labels(judgement, "out").inc(usage.output_tokens)
        await self.budget.spend(tenant_id, usage.input_tokens + usage.output_tokens)
        LLM_CALLS.labels(judgement, "ok").inc()
        return message


def _repair_content(block: Any, error: str) -> list[dict[str, Any]] | str:
    text = f"That answer was not valid: {error[:4000]}. Call the tool again with a corrected answer."
    if block is None:
        return text
    return [{"type": "tool_result", "tool_use_id": block.id, "is_error": True, "content": text}]


def _restore(value: Any, redacted: Redacted) -> Any:
    """Put redacted values back into every string of the parsed answer (keys included), never
    into its JSON text: a value holding a quote or a backslash stays a value."""
    if not redacted.mapping:
        return value
    if isinstance(value, str):
        return redacted.restore(value)
    if isinstance(value, list):
        return [_restore(v, redacted) for v in value]
    if isinstance(value, dict):
        return {_restore(k, redacted): _restore(v, redacted) for k, v in value.items()}
    return value


async def attempt(
    judgement: str,
    claude_call: Callable[[], Awaitable[M]],
    on_fallback: Callable[[str, str], Awaitable[None]] | None = None,
) -> M | None:
    """Claude's answer, or None when it gave none (counted, logged, and `on_fallback`, an
    audit event say, is told why): the caller's local path then decides."""
    try:
        return await claude_call()
    except JudgementFailed as exc:
        LLM_FALLBACKS.labels(judgement, exc.reason).inc()
        log.warning(
            "llm judgement failed; local path decides", extra={"judgement": judgement, "reason": exc.reason}
        )
        if on_fallback is not None:
            await on_fallback(exc.reason, str(exc))
        return None


async def with_fallback(
    judgement: str,
    claude_call: Callable[[], Awaitable[M]] | None,
    local_call: Callable[[], Awaitable[M]],
    on_fallback: Callable[[str, str], Awaitable[None]] | None = None,
) -> tuple[M, str]:
    """The judgement and the method that made it ("claude" or "local"). Without Claude
    configured the local path decides; when Claude fails it decides too. The event being
    handled is never lost."""
    if claude_call is not None:
        answer = await attempt(judgement, claude_call, on_fallback)
        if answer is not None:
            return answer, "claude"
    return await local_call(), "local"
