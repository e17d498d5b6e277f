"""The local path of every judgement, and the checks that hold any implementation's answer to
its input. The embedding model is the real one (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libs.common.embeddings import shared_embedder
from libs.common.reasoning import (
    JUDGEMENTS,
    Candidate,
    ClassifyInput,
    ClassifyOutput,
    Evidence,
    InterpretInput,
    InterpretOutput,
    LocalReasoner,
    PlanStep,
    SummariseInput,
    SummariseOutput,
)
from libs.common.settings import REPO_ROOT
from tests.samples import CATALOGUE, TICKET


@pytest.fixture(scope="module")
def local() -> LocalReasoner:
    return LocalReasoner(shared_embedder().encode)


def test_an_instruction_becomes_a_plan_of_catalogue_actions_with_parameters_from_the_ticket(
    local: LocalReasoner,
) -> None:
    plan = local.run(
        "interpret",
        InterpretInput(
            instruction="unlock her account and reset the password", ticket=TICKET, catalogue=CATALOGUE
        ),
    )
    assert isinstance(plan, InterpretOutput)
    assert [(s.action, s.params) for s in plan.steps] == [
        ("ad.unlock_account", {"user": "anna.berg"}),
        ("ad.reset_password", {"user": "anna.berg"}),
    ]
    two = local.run(
        "interpret",
        InterpretInput(
            instruction="add anna.berg to the group Finance then restart the spooler on PC-12",
            ticket=TICKET,
            catalogue=CATALOGUE,
        ),
    )
    assert [(s.action, s.params) for s in two.steps] == [  # type: ignore[attr-defined]
        ("ad.add_to_group", {"user": "anna.berg", "group": "Finance"}),
        ("rmm.restart_service", {"device": "PC-12"}),
    ]
    nothing = local.run(
        "interpret",
        InterpretInput(instruction="order pizza for the team", ticket=TICKET, catalogue=CATALOGUE),
    )
    assert nothing.steps == [] and nothing.unresolved == ["order pizza for the team"]  # type: ignore[attr-defined]
    # A group to add to that nobody named is unresolved, not guessed.
    vague = local.run(
        "interpret", InterpretInput(instruction="add her to a group", ticket=TICKET, catalogue=CATALOGUE)
    )
    assert vague.steps == [] and "group" in vague.unresolved[0]  # type: ignore[attr-defined]


def test_answers_are_checked_against_their_input(local: LocalReasoner) -> None:
    question = ClassifyInput(
        text="printer on floor 2 is jammed",
        candidates=[
            Candidate(label="Hardware", description="printers, laptops"),
            Candidate(label="Access", description="passwords"),
        ],
        context=[Evidence(key="T-1", kind="ticket", id="T-1", excerpt="printer jam fixed")],
    )
    answer = local.run("classify", question)
    assert isinstance(answer, ClassifyOutput) and answer.label == "Hardware" and answer.evidence == ["T-1"]
    check = JUDGEMENTS["classify"].check
    check(question, answer)
    with pytest.raises(ValueError, match="not one of the candidates"):
        check(question, ClassifyOutput(label="Coffee", confidence=0.9, rationale="x"))
    with pytest.raises(ValueError, match="not given"):
        check(question, ClassifyOutput(label="Hardware", confidence=0.9, rationale="x", evidence=["T-9"]))
    plan_check = JUDGEMENTS["interpret"].check
    ask = InterpretInput(instruction="x", catalogue=CATALOGUE)
    with pytest.raises(ValueError, match="not in the catalogue"):
        plan_check(ask, InterpretOutput(steps=[PlanStep(action="rm.rf")], confidence=0.9))
    with pytest.raises(ValueError, match="lacks"):
        plan_check(
            ask,
            InterpretOutput(steps=[PlanStep(action="ad.add_to_group", params={"user": "a"})], confidence=0.9),
        )
    with pytest.raises(ValueError, match="no parameters"):
        plan_check(
            ask,
            InterpretOutput(
                steps=[PlanStep(action="ad.unlock_account", params={"user": "a", "sudo": "1"})],
                confidence=0.9,
            ),
        )
    summary_check = JUDGEMENTS["summarise"].check
    with pytest.raises(ValueError, match="not given"):
        summary_check(
            SummariseInput(subject="s", sources=[Evidence(key="a", kind="ticket", id="1")]),
            SummariseOutput.model_validate({"sentences": [{"text": "x", "sources": ["b"]}]}),
        )


def test_eval_reasoning_scores_the_local_path_on_a_cases_file(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    rows = [
        {
            "input": {"action": "x", "error_class": "ReadTimeout"},
            "expected": {"category": "transient", "retry": True},
        },
        {
            "input": {"action": "x", "error_class": "HTTPError", "message": "HTTP 403"},
            "expected": {"category": "permission"},
        },
        {"input": {"action": "x", "error_class": "Boom"}, "expected": {"category": "auth"}},
    ]
    cases.write_text("\n".join(json.dumps(r) for r in rows))
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "eval", "reasoning", "--judgement", "analyse_failure",
         "--cases", str(cases)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["implementation"] == "local" and report["cases"] == 3
    assert report["agreement"] == round(2 / 3, 4) and report["disagreements"][0]["case"] == 2
    bad = subprocess.run(
        [sys.executable, "-m", "cli.main", "eval", "reasoning", "--judgement", "divine",
         "--cases", str(cases)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0 and "no judgement 'divine'" in bad.stderr
