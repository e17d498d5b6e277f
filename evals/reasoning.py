"""`msp eval reasoning`: a set of cases through the configured implementation of a judgement
(Claude when `ANTHROPIC_API_KEY` is set, else the local path), scored against the expected
outputs, so both paths can be compared on the same cases.

Each line of the cases file is `{"input": {...}, "expected": {...}}` (optionally "tenant_id").
A case agrees when every field of "expected" equals the output's; for lists of steps, the
sequence of actions (and the parameters the expected steps name) must match.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from libs.common.reasoning import JUDGEMENTS, Reasoning, reasoning_from_settings
from libs.common.settings import ServiceSettings


def read_cases(path: Path, judgement: str) -> list[tuple[str, Any, dict[str, Any]]]:
    if judgement not in JUDGEMENTS:
        raise ValueError(f"no judgement {judgement!r} (known: {', '.join(JUDGEMENTS)})")
    if not path.is_file():
        raise ValueError(f"no cases file at {path}")
    spec = JUDGEMENTS[judgement]
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            data = spec.input.model_validate(row["input"])
            expected = dict(row["expected"])
        except (json.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
            raise ValueError(f"{path}:{n}: not a case for {judgement}: {str(exc)[:300]}") from None
        out.append((str(row.get("tenant_id", "eval")), data, expected))
    if not out:
        raise ValueError(f"{path}: no cases")
    return out


def agrees(output: dict[str, Any], expected: dict[str, Any]) -> bool:
    for key, want in expected.items():
        got = output.get(key)
        if key == "steps" and isinstance(want, list):
            if [s.get("action") for s in got or []] != [s.get("action") for s in want]:
                return False
            for g, w in zip(got or [], want, strict=False):
                if any(g.get("params", {}).get(k) != v for k, v in w.get("params", {}).items()):
                    return False
        elif got != want:
            return False
    return True


async def _run(
    reasoning: Reasoning, judgement: str, cases: list[tuple[str, Any, dict[str, Any]]]
) -> dict[str, Any]:
    agreed, methods = 0, {"claude": 0, "local": 0}
    times: list[float] = []
    misses: list[dict[str, Any]] = []
    for n, (tenant, data, expected) in enumerate(cases):
        t = time.perf_counter()
        out, method = await reasoning.judge(judgement, tenant, data)
        times.append(time.perf_counter() - t)
        methods[method] += 1
        got = out.model_dump(mode="json")
        if agrees(got, expected):
            agreed += 1
        elif len(misses) < 10:
            misses.append({"case": n, "expected": expected, "got": {k: got.get(k) for k in expected}})
    ms = sorted(x * 1000 for x in times)
    return {
        "eval": "reasoning",
        "judgement": judgement,
        "implementation": "claude" if reasoning.claude is not None else "local",
        "cases": len(cases),
        "agreement": round(agreed / len(cases), 4),
        "decided_by": methods,
        "p50_ms": round(ms[len(ms) // 2], 1),
        "disagreements": misses,
    }


def evaluate(*, judgement: str, cases: Path) -> dict[str, Any]:
    loaded = read_cases(cases, judgement)
    return asyncio.run(_run(reasoning_from_settings(ServiceSettings()), judgement, loaded))
