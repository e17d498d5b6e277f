"""The reasoning layer's Claude path through the real `anthropic` SDK and a Messages API server
on loopback: checked answers, a repair, the local path taking over (malformed, 429, timeout),
and no secret planted in a ticket ever reaching a prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from libs.common.embeddings import shared_embedder
from libs.common.llm import Claude, ClaudeConfig
from libs.common.reasoning import (
    Candidate,
    ClassifyInput,
    Evidence,
    InterpretInput,
    LocalReasoner,
    Reasoning,
    SummariseInput,
    TicketContext,
)
from tests.messages_server import MessagesServer, messages_server
from tests.samples import CATALOGUE, TICKET

pytestmark = pytest.mark.integration

SECRETS = [
    "Winter2026!Blue",  # a temporary password an L1 typed into the ticket
    "AKIAIOSFODNN7EXAMPLE",  # an AWS access key id
    "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",  # an API key
    "Password=Sup3rS3cret;",  # a connection string's password
    "4111 1111 1111 1111",  # a card number
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm5hIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ",  # a JWT
]
TICKET_TEXT = (
    "Anna (anna.berg@acme.test, +44 20 7946 0958) is locked out again. L1 set the temp password "
    "Winter2026!Blue; the sync job uses AKIAIOSFODNN7EXAMPLE and key "
    "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c; "
    "app config: Server=sql01;Database=crm;User Id=svc;Password=Sup3rS3cret; she paid the licence with "
    "4111 1111 1111 1111. Token: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm5hIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
)


@pytest.fixture
def server() -> Iterator[tuple[MessagesServer, str]]:
    with messages_server() as s:
        yield s


def reasoning(url: str, **kw: object) -> Reasoning:
    claude = Claude(ClaudeConfig(api_key="sk-test", model="claude-test", base_url=url, **kw))  # type: ignore[arg-type]
    return Reasoning(claude, LocalReasoner(shared_embedder().encode))


def interpret_input(text: str = "unlock her account and reset the password") -> InterpretInput:
    return InterpretInput(instruction=text, ticket=TICKET, catalogue=CATALOGUE)


async def test_claude_plans_from_the_catalogue_and_a_plan_outside_it_gets_one_repair(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    good = {
        "steps": [{"action": "ad.unlock_account", "params": {"user": "anna.berg"}, "why": "locked out"}],
        "confidence": 0.9,
    }
    srv.script = [
        {
            "input": {
                "steps": [{"action": "ad.delete_user", "params": {"user": "anna.berg"}}],
                "confidence": 0.9,
            }
        },
        {"input": good},
    ]
    out, method = await reasoning(url).judge("interpret", "acme", interpret_input("unlock her account"))
    assert method == "claude" and [s.action for s in out.steps] == ["ad.unlock_account"]  # type: ignore[attr-defined]
    assert len(srv.requests) == 2
    repair = srv.requests[1]["body"]["messages"][-1]["content"][0]
    assert (
        repair["type"] == "tool_result" and repair["is_error"] and "not in the catalogue" in repair["content"]
    )
    body = srv.requests[0]["body"]
    assert body["tool_choice"] == {"type": "tool", "name": "interpret"}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}, "the stable system part is cached"
    assert (
        body["system"][1]["cache_control"] == {"type": "ephemeral"}
        and "ad.reset_password" in body["system"][1]["text"]
    )
    assert "ad.reset_password" not in body["messages"][0]["content"], (
        "the catalogue goes once, cached, not per question"
    )
    assert srv.requests[0]["headers"]["authorization"] == "Bearer sk-test"
    assert "anthropic-version" in srv.requests[0]["headers"]


async def test_malformed_twice_then_the_local_path_plans_and_the_fallback_is_told(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    srv.script = [{"text": "I would unlock it."}, {"input": {"steps": "all of them", "confidence": 2}}]
    told: list[str] = []

    async def audit(reason: str, detail: str) -> None:
        told.append(reason)

    out, method = await reasoning(url).judge("interpret", "acme", interpret_input(), on_fallback=audit)
    assert method == "local" and told == ["invalid"]
    assert [s.action for s in out.steps] == ["ad.unlock_account", "ad.reset_password"]  # type: ignore[attr-defined]


async def test_a_429_is_retried_and_a_timeout_falls_back(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    answer = {"label": "Access", "confidence": 0.8, "rationale": "locked out", "evidence": []}
    srv.script = [{"status": 429}, {"input": answer}]
    question = ClassifyInput(
        text="locked out", candidates=[Candidate(label="Access"), Candidate(label="Hardware")]
    )
    out, method = await reasoning(url, max_retries=2).judge("classify", "acme", question)
    assert (out.label, method) == ("Access", "claude")  # type: ignore[attr-defined]
    srv.script = [{"sleep": 2, "input": answer}]
    out, method = await reasoning(url, timeout_s=0.3, max_retries=0).judge("classify", "acme", question)
    assert method == "local" and out.label in ("Access", "Hardware")  # type: ignore[attr-defined]


async def test_no_secret_planted_in_a_ticket_reaches_any_prompt(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    r = reasoning(url)
    srv.script = [
        {"input": {"label": "Access", "confidence": 0.9, "rationale": "locked out", "evidence": ["T-1"]}},
        {"input": {"sentences": [{"text": "Anna is locked out.", "sources": ["ticket"]}]}},
        {
            "input": {
                "steps": [{"action": "ad.unlock_account", "params": {"user": "anna.berg"}}],
                "confidence": 0.9,
            }
        },
    ]
    context = [Evidence(key="T-1", kind="ticket", id="T-1", excerpt=TICKET_TEXT)]
    await r.judge(
        "classify",
        "acme",
        ClassifyInput(text=TICKET_TEXT, candidates=[Candidate(label="Access")], context=context),
    )
    await r.judge(
        "summarise",
        "acme",
        SummariseInput(
            subject=TICKET_TEXT, sources=[Evidence(key="ticket", kind="ticket", id="1", excerpt=TICKET_TEXT)]
        ),
    )
    ticket = TicketContext(text=TICKET_TEXT, requester="anna.berg", devices=["PC-12"])
    await r.judge(
        "interpret",
        "acme",
        InterpretInput(instruction=f"unlock her; {TICKET_TEXT}", ticket=ticket, catalogue=CATALOGUE),
    )
    assert len(srv.requests) == 3
    for request in srv.requests:
        sent = json.dumps(request["body"])
        for secret in SECRETS:
            assert secret not in sent and secret.replace(" ", "") not in sent, (
                f"{secret[:12]}… left the process"
            )
        assert "anna.berg@acme.test" not in sent and "7946 0958" not in sent, (
            "personal data the judgement does not need"
        )
