"""Repeated runs of a benchmark case, reported as median, min and max, so a single noisy run
cannot decide a target. Every benchmark takes `--runs N` (at least 3 by default) and prints one
JSON object per case: the figures of each run under `each`, and under `median`, `min` and `max`
every numeric figure the runs share."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from typing import Any


def add_runs(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--runs", type=int, default=3, help="times the case runs (median, min and max are reported)"
    )


def summarise(bench: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of `runs` (one dict per run) as median, min and max, with each run kept."""
    if not runs:
        raise ValueError("no runs to summarise")
    numeric = [
        k
        for k, v in runs[0].items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and all(isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool) for r in runs)
    ]
    return {
        "bench": bench,
        "runs": len(runs),
        "median": {k: round(statistics.median(r[k] for r in runs), 3) for k in numeric},
        "min": {k: min(r[k] for r in runs) for k in numeric},
        "max": {k: max(r[k] for r in runs) for k in numeric},
        "each": runs,
    }


def repeat(bench: str, runs: int, once: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """Run `once(i)` `runs` times (at least once), showing each run's figures on stderr."""
    if runs < 1:
        raise SystemExit("--runs must be at least 1")
    results = []
    for i in range(runs):
        result = once(i)
        print(f"[bench] {bench} run {i + 1}/{runs}: {json.dumps(result)}", file=sys.stderr, flush=True)
        results.append(result)
    return summarise(bench, results)
