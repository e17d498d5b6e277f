"""`msp eval alarms` end to end: a small alarm stream with a known causal graph, replayed
through ingest and triage processes on the real broker."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from libs.common.settings import REPO_ROOT

pytestmark = pytest.mark.e2e


def write_stream(folder: Path) -> int:
    """Four alarm types on five devices: 0 causes 1, 2 causes 3; episodes an hour or more apart."""
    rng = random.Random(3)
    rows = []
    t = 1000
    for _ in range(60):
        t += rng.randint(4000, 9000)
        device = rng.randrange(5)
        cause = rng.choice([0, 2])
        rows.append((cause, device, t, t + 120))
        rows.append((cause + 1, device, t + rng.randint(2, 30), t + 150))
        if rng.random() < 0.5:  # a repeat of the effect
            rows.append((cause + 1, device, t + rng.randint(40, 90), t + 160))
    rows.sort(key=lambda r: r[2])
    with (folder / "Alarm.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["alarm_id", "device_id", "start_timestamp", "end_timestamp"])
        w.writerows(rows)
    dag = np.zeros((4, 4), dtype=int)
    dag[0, 1] = dag[2, 3] = 1
    np.save(folder / "DAG.npy", dag)
    return len(rows)


def test_eval_alarms_replays_the_stream_and_scores_the_signals(bootstrap: str, tmp_path: Path) -> None:
    n = write_stream(tmp_path)
    out = tmp_path / "out" / "assignments.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "eval",
            "alarms",
            "--data",
            str(tmp_path),
            "--assignments",
            str(out),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["alerts_in"] == n
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["row"]) for r in rows] == list(range(n))
    assert report["signals_out"] == len({r["signal_id"] for r in rows})
    # Cause and effect on one device, seconds apart, every time: one signal per episode.
    assert report["noise_reduction"] >= 0.5
    assert report["pair_precision"] == 1.0
    assert report["linked_recall"] >= 0.9
    assert report["related_pair_precision"] == 1.0  # chains and common causes count too: never lower
    for rule in ("baseline_quiet_gap_15min", "baseline_quiet_gap_60min"):
        assert set(report[rule]) == {
            "signals_out",
            "noise_reduction",
            "pair_precision",
            "linked_recall",
            "related_pair_precision",
        }
        assert report[rule]["related_pair_precision"] >= report[rule]["pair_precision"]
    # a longer quiet gap can only join more alarms into one signal
    hour, quarter = report["baseline_quiet_gap_60min"], report["baseline_quiet_gap_15min"]
    assert hour["signals_out"] <= quarter["signals_out"]
    assert report["p99_alert_to_signal_s"] >= report["p50_alert_to_signal_s"] > 0
