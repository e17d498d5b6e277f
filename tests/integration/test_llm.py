"""The Claude path through the real `anthropic` SDK against a Messages API server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from libs.common.llm import Claude, ClaudeConfig, with_fallback
from tests.messages_server import MessagesServer, messages_server

pytestmark = pytest.mark.integration

TICKET = (
    "Maria (maria.lopez@client.example) is locked out. L1 set temp password: Winter2026!Blue "
    "and the VPN still refuses her."
)


class Intent(BaseModel):
    intent: Literal["password_reset", "account_lockout", "vpn", "other"]
    confidence: float = Field(ge=0, le=1)
    contact: str = ""


@pytest.fixture
def server() -> Iterator[tuple[MessagesServer, str]]:
    with messages_server() as s:
        yield s


def claude(url: str, **kw: object) -> Claude:
    return Claude(ClaudeConfig(api_key="sk-test-key", model="claude-test", base_url=url, **kw))  # type: ignore[arg-type]


async def ask(c: Claude, tenant: str = "acme") -> Intent:
    return await c.judge(
        judgement="classify_intent",
        tenant_id=tenant,
        system="Classify the ticket.",
        prompt=TICKET,
        output=Intent,
    )


async def test_a_valid_answer_comes_back_validated_with_redacted_values_restored(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    srv.script = [
        {"input": {"intent": "account_lockout", "confidence": 0.86, "contact": "[PERSON_1] <[EMAIL_1]>"}}
    ]
    result = await ask(claude(url))
    assert result == Intent(
        intent="account_lockout", confidence=0.86, contact="Maria <maria.lopez@client.example>"
    )
    (req,) = srv.requests
    sent = json.dumps(req["body"])
    # Nothing secret or personal left: not the password, not the address, not her name.
    assert "Winter2026!Blue" not in sent and "maria.lopez@client.example" not in sent
    assert "Maria" not in sent and "[PERSON_1]" in sent
    assert req["body"]["tool_choice"] == {"type": "tool", "name": "classify_intent"}
    assert req["body"]["tools"][0]["input_schema"]["properties"]["intent"]["enum"]
    assert req["body"]["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "anthropic-version" in req["headers"]
    assert (
        req["headers"].get("x-api-key") == "sk-test-key"
        or req["headers"].get("authorization") == "Bearer sk-test-key"
    )


async def test_an_invalid_answer_gets_one_repair(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    srv.script = [
        {"input": {"intent": "printer", "confidence": 3}},
        {"input": {"intent": "vpn", "confidence": 0.7}},
    ]
    assert (await ask(claude(url))).intent == "vpn"
    repair = srv.requests[1]["body"]["messages"][-1]["content"][0]
    assert repair["type"] == "tool_result" and repair["is_error"] and "intent" in repair["content"]


async def test_invalid_twice_falls_back_to_the_local_path_and_says_so(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    srv.script = [{"input": {"intent": "printer"}}, {"text": "I think it is a VPN problem."}]
    told: list[str] = []
    c = claude(url)

    async def local() -> Intent:
        return Intent(intent="vpn", confidence=0.55)

    async def audit(reason: str, detail: str) -> None:
        told.append(reason)

    result, method = await with_fallback("classify_intent", lambda: ask(c), local, audit)
    assert (result.intent, method, told) == ("vpn", "local", ["invalid"])


async def test_a_429_is_retried_by_the_sdk(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    srv.script = [{"status": 429}, {"input": {"intent": "password_reset", "confidence": 0.9}}]
    assert (await ask(claude(url, max_retries=2))).intent == "password_reset"
    assert len(srv.requests) == 2


async def test_a_timeout_falls_back_without_losing_the_judgement(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    srv.script = [{"sleep": 2, "input": {"intent": "vpn", "confidence": 0.9}}]
    c = claude(url, timeout_s=0.3, max_retries=0)
    told: list[str] = []

    async def local() -> Intent:
        return Intent(intent="account_lockout", confidence=0.6)

    async def audit(reason: str, detail: str) -> None:
        told.append(reason)

    result, method = await with_fallback("classify_intent", lambda: ask(c), local, audit)
    assert (result.intent, method, told) == ("account_lockout", "local", ["timeout"])


async def test_the_token_budget_is_per_tenant(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    srv.script = [{"input": {"intent": "vpn", "confidence": 0.9}}] * 3
    c = claude(url, tenant_token_budget=100)  # one answer costs 150 tokens
    await ask(c, "acme")

    async def local() -> Intent:
        return Intent(intent="other", confidence=0.1)

    _, method = await with_fallback("classify_intent", lambda: ask(c, "acme"), local)
    assert method == "local"
    assert (await ask(c, "globex")).intent == "vpn"  # another tenant has its own budget


async def test_the_daily_budget_is_shared_by_every_process_of_a_service_and_renews_each_day(
    server,
    pg_url: str,  # type: ignore[no-untyped-def]
) -> None:
    """Two Claude clients on one database, as two processes of a service are: what one spends
    counts for the other (N processes no longer give N budgets); the next day starts afresh."""
    from sqlalchemy import MetaData

    from libs.common.db import make_engine
    from libs.common.llm import TokenBudget, usage_table
    from tests.conftest import unique

    srv, url = server
    srv.script = [{"input": {"intent": "vpn", "confidence": 0.9}}] * 4
    engine = make_engine(pg_url)
    table = usage_table(MetaData(), unique("svc").replace("-", "_"))
    table.create(engine)
    day = ["2026-11-28"]
    one, two = (
        Claude(
            ClaudeConfig(api_key="sk-test-key", model="claude-test", base_url=url),
            budget=TokenBudget(200, engine, table, today=lambda: day[0]),
        )
        for _ in range(2)
    )
    tenant = unique("acme")
    await ask(one, tenant)  # 150 tokens: under 200
    await ask(two, tenant)  # 300 now: the budget is spent, for both
    for c in (one, two):
        with pytest.raises(Exception, match="budget"):
            await ask(c, tenant)
    day[0] = "2026-11-29"
    assert (await ask(one, tenant)).intent == "vpn"
    engine.dispose()
