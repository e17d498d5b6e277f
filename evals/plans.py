"""`msp eval plans`: engineers' instructions through the configured interpreter (Claude when
`ANTHROPIC_API_KEY` is set, else the local one), scored against the expected plans.

Each case is `{"id", "instruction", "ticket": {"requester", "device", "summary"}, "expected":
[{"action", "params"}]}`. Parameters are compared with the catalogue's defaults filled in on
both sides (a plan that leaves `must_change_at_next_logon` at its default says the same as one
that writes it out). Reported:
- whole-plan accuracy: the same steps, in the same order, with the same parameters;
- step precision and recall: steps (action and parameters) matched as a multiset;
- refusal rate: the share of cases expecting no plan that got an empty one;
- unasked-step rate: the share of plans holding a step whose action the expected plan lacks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from libs.common.settings import ServiceSettings, load_settings
from services.automation.catalogue import catalogue
from services.automation.planner import Planner, TicketIn
from services.automation.policy import TenantPolicy


def read_cases(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ValueError(f"no cases file at {path}")
    cases = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            cases.append(
                {
                    "id": str(row["id"]),
                    "instruction": str(row["instruction"]),
                    "ticket": dict(row.get("ticket") or {}),
                    "expected": list(row["expected"]),
                }
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a case ({exc})") from None
    if not cases:
        raise ValueError(f"{path}: no cases")
    return cases


def normalise(steps: list[dict[str, Any]]) -> list[tuple[str, str]]:
    cat = catalogue()
    out = []
    for s in steps:
        action = cat.get(s["action"])
        params = {**(action.defaults() if action else {}), **(s.get("params") or {})}
        out.append((s["action"], json.dumps(params, sort_keys=True, default=str)))
    return out


def score(results: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> dict[str, Any]:
    exact = tp = got_n = want_n = 0
    empty_cases = refused = plans_with_steps = unasked = 0
    for got, want in results:
        g, w = normalise(got), normalise(want)
        exact += g == w
        common = Counter(g) & Counter(w)
        tp += sum(common.values())
        got_n += len(g)
        want_n += len(w)
        if not w:
            empty_cases += 1
            refused += not g
        if g:
            plans_with_steps += 1
            wanted_actions = {a for a, _ in w}
            unasked += any(a not in wanted_actions for a, _ in g)
    n = len(results)
    return {
        "cases": n,
        "whole_plan_accuracy": round(exact / n, 4),
        "step_precision": round(tp / got_n, 4) if got_n else 1.0,
        "step_recall": round(tp / want_n, 4) if want_n else 1.0,
        "refusal_rate": round(refused / empty_cases, 4) if empty_cases else None,
        "cases_expecting_no_plan": empty_cases,
        "unasked_step_rate": round(unasked / plans_with_steps, 4) if plans_with_steps else 0.0,
        "plans_with_steps": plans_with_steps,
    }


def evaluate(*, cases: Path, plans: Path, settings: ServiceSettings | None = None) -> dict[str, Any]:
    from libs.common.embeddings import shared_embedder
    from libs.common.reasoning import reasoning_from_settings
    from services.automation.interpret import LocalInterpreter

    rows = read_cases(cases)
    settings = settings or load_settings(ServiceSettings, service_name="eval")
    embed = shared_embedder().encode
    planner = Planner(reasoning_from_settings(settings, embed=embed), LocalInterpreter(embed))
    policy = TenantPolicy()
    results = []
    seconds: list[float] = []
    methods: Counter[str] = Counter()
    plans.parent.mkdir(parents=True, exist_ok=True)

    async def one(case: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        t = case["ticket"]
        ticket = TicketIn(
            requester=t.get("requester"), device=t.get("device"), summary=t.get("summary") or ""
        )
        plan, method = await planner.interpret("eval", case["instruction"], ticket, policy)
        return plan.as_list(), method

    with plans.open("w") as out:
        for case in rows:
            start = time.perf_counter()
            got, method = asyncio.run(one(case))
            seconds.append(time.perf_counter() - start)
            methods[method] += 1
            out.write(json.dumps({"id": case["id"], "plan": got}) + "\n")
            results.append((got, case["expected"]))
    report = score(results)
    seconds.sort()
    report["interpreter"] = dict(methods)
    report["seconds_per_case_p50"] = round(seconds[len(seconds) // 2], 4)
    report["seconds_per_case_p95"] = round(seconds[int(len(seconds) * 0.95) - 1], 4)
    report["plans"] = str(plans)
    return report
