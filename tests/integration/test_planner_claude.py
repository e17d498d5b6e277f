"""The planner's Claude path through the real SDK against a Messages API server on loopback:
Claude sees only the actions the tenant allows, a value Claude made up (in neither the
instruction nor the ticket) becomes a question, and an action the tenant does not allow never
reaches the plan."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from libs.common.embeddings import shared_embedder
from libs.common.llm import Claude, ClaudeConfig
from libs.common.reasoning import LocalReasoner, Reasoning
from services.automation.interpret import LocalInterpreter
from services.automation.planner import Planner, TicketIn
from services.automation.policy import TenantPolicy
from tests.messages_server import MessagesServer, messages_server

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[tuple[MessagesServer, str]]:
    with messages_server() as s:
        yield s


def planner(url: str) -> Planner:
    embed = shared_embedder().encode
    claude = Claude(ClaudeConfig(api_key="sk-test", model="claude-test", base_url=url))  # type: ignore[arg-type]
    return Planner(Reasoning(claude, LocalReasoner(embed)), LocalInterpreter(embed))


async def test_claude_plans_within_the_tenants_actions_and_guesses_nothing(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    srv.script = [
        {
            "input": {
                "steps": [
                    {"action": "identity.unlock_account", "params": {"user": "mgarcia"}},
                    {
                        "action": "identity.add_to_group",
                        "params": {"user": "mgarcia", "group": "Finance-Admins"},
                    },
                ],
                "confidence": 0.9,
            }
        }
    ]
    policy = TenantPolicy(allowed_actions=["identity.*"])
    ticket = TicketIn(requester="mgarcia", summary="Locked out after holiday")
    plan, method = await planner(url).interpret(
        "acme", "unlock her and give her the finance group", ticket, policy
    )
    assert method == "claude"
    catalogue_text = srv.requests[0]["body"]["system"][1]["text"]
    assert "identity.unlock_account" in catalogue_text and "aws.attach_policy" not in catalogue_text, (
        "Claude is shown only the actions this tenant allows"
    )
    assert [s.action for s in plan.steps] == ["identity.unlock_account", "identity.add_to_group"]
    assert plan.steps[0].sources == {"user": "ticket"}
    assert plan.steps[1].missing == ["group"], "a group named nowhere is a question, not Claude's guess"
    assert plan.questions == ["identity.add_to_group: which group?"]


async def test_without_an_answer_from_claude_the_local_interpreter_plans(server) -> None:  # type: ignore[no-untyped-def]
    srv, url = server
    srv.script = [{"status": 500}, {"status": 500}, {"status": 500}, {"status": 500}]
    ticket = TicketIn(requester="mgarcia", device="ACME-LT-042")
    plan, method = await planner(url).interpret("acme", "reboot the laptop", ticket, TenantPolicy())
    assert method == "local" and plan.as_list() == [
        {"action": "rmm.reboot_device", "params": {"device": "ACME-LT-042"}}
    ]
