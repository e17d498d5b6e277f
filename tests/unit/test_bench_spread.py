"""Benchmarks report the spread of several runs, not one run's figures."""

import pytest

from bench.spread import summarise


def test_the_median_min_and_max_of_every_shared_figure_are_reported() -> None:
    runs = [
        {"eps": 100, "p99_s": 1.5, "namespace": "a", "ok": True},
        {"eps": 300, "p99_s": 0.5, "namespace": "b", "ok": True},
        {"eps": 200, "p99_s": None, "namespace": "c", "ok": False},
    ]
    report = summarise("x", runs)
    assert report["runs"] == 3 and report["each"] == runs
    assert report["median"] == {"eps": 200}
    assert report["min"] == {"eps": 100} and report["max"] == {"eps": 300}
    # A figure missing from one run (None) is not summarised; flags and names never are.
    assert "p99_s" not in report["median"] and "ok" not in report["median"]
    with pytest.raises(ValueError, match="no runs"):
        summarise("x", [])
