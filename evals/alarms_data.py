"""The alarm-stream evaluation's data side: reading an alarm CSV, turning its rows into alerts,
and scoring a grouping against a causal graph. No I/O beyond reading the files.

The CSV has `alarm_id` (the alarm type), `device_id`, `start_timestamp`, `end_timestamp`
(seconds). The causal graph (`DAG.npy`, types x types) is ground truth for scoring only.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

PAIR_WINDOW_S = 3600
# The replayed stream starts here; the CSV's seconds are offsets from it.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Alarm:
    row: int
    type: int
    device: int
    start: int
    end: int


def read_alarms(path: Path) -> list[Alarm]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"alarm_id", "device_id", "start_timestamp", "end_timestamp"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns {sorted(need)}, found {reader.fieldnames}")
        out = []
        for i, r in enumerate(reader):
            try:
                start, end = int(float(r["start_timestamp"])), int(float(r["end_timestamp"]))
                out.append(Alarm(i, int(r["alarm_id"]), int(r["device_id"]), start, max(start, end)))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: data row {i}: {exc}") from exc
    return out


def at(seconds: int) -> str:
    return (EPOCH + timedelta(seconds=seconds)).isoformat()


def canonical_alert(alarm: Alarm, status: str) -> dict[str, Any]:
    """One alarm as a canonical alert. Like Alertmanager, the fingerprint is the label set
    (type and device), so repeats of one type on one device are the same alert firing again."""
    body: dict[str, Any] = {
        "source_system": "huawei-nms",
        "fingerprint": f"alarm-{alarm.type}-dev-{alarm.device}",
        "status": status,
        "severity": "warning",
        "title": f"Alarm {alarm.type} raised on device {alarm.device}",
        "device": f"dev-{alarm.device}",
        "labels": {"alertname": f"ALARM_{alarm.type}", "device_id": str(alarm.device)},
        "starts_at": at(alarm.start),
    }
    if status == "resolved":
        body["ends_at"] = at(alarm.end)
    return body


def replay_order(alarms: list[Alarm], *, with_resolutions: bool = True) -> list[tuple[int, str, Alarm]]:
    """Firing at each start and resolved at each end, in time order (firing first on ties)."""
    events = [(a.start, 0, a.row, "firing", a) for a in alarms]
    if with_resolutions:
        events += [(a.end, 1, a.row, "resolved", a) for a in alarms]
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return [(t, status, a) for t, _, _, status, a in events]


def linked_types(dag: np.ndarray) -> np.ndarray:
    d = np.asarray(dag).astype(bool)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"the causal graph must be a square matrix, got shape {d.shape}")
    return d | d.T | np.eye(d.shape[0], dtype=bool)


def related_types(dag: np.ndarray) -> np.ndarray:
    """Types the causal graph connects at all: one causes the other, directly or through a
    chain, or both have a cause in common (`linked_types` holds only direct edges)."""
    d = np.asarray(dag).astype(bool)
    n = d.shape[0]
    reach = d.copy()
    for k in range(n):  # transitive closure (Warshall)
        reach |= reach[:, [k]] & reach[[k], :]
    common_cause = (reach.T.astype(np.int64) @ reach.astype(np.int64)) > 0
    return linked_types(d) | reach | reach.T | common_cause


def pair_scores(
    alarms: list[Alarm], signal_of: list[Any], linked: np.ndarray, related: np.ndarray | None = None
) -> dict[str, float]:
    """Over pairs of alarms on the same device starting at most an hour apart: linked recall
    (linked pairs that share a signal) and pair precision (pairs sharing a signal that are
    linked). `signal_of[i]` is the signal of alarms[i]. With `related` (see `related_types`),
    also the precision counting every causally related pair as right."""
    ids: dict[Any, int] = {}
    sig = np.array([ids.setdefault(s, len(ids)) for s in signal_of])
    ty = np.array([a.type for a in alarms])
    dev = np.array([a.device for a in alarms])
    start = np.array([a.start for a in alarms])
    if ty.max(initial=0) >= linked.shape[0]:
        raise ValueError("an alarm type is outside the causal graph")
    linked_pairs = linked_shared = shared = shared_linked = shared_related = 0
    for d in np.unique(dev):
        idx = np.where(dev == d)[0]
        idx = idx[np.argsort(start[idx], kind="stable")]
        t, k, s = start[idx], ty[idx], sig[idx]
        for i in range(len(idx)):
            j = np.searchsorted(t, t[i] + PAIR_WINDOW_S, side="right")
            if j <= i + 1:
                continue
            lk = linked[k[i], k[i + 1 : j]]
            same = s[i + 1 : j] == s[i]
            linked_pairs += int(lk.sum())
            linked_shared += int((lk & same).sum())
            shared += int(same.sum())
            shared_linked += int((lk & same).sum())
            if related is not None:
                shared_related += int((related[k[i], k[i + 1 : j]] & same).sum())
    out: dict[str, float] = {
        "linked_recall": round(linked_shared / linked_pairs, 4) if linked_pairs else 0.0,
        "pair_precision": round(shared_linked / shared, 4) if shared else 0.0,
        "linked_pairs": linked_pairs,
        "shared_pairs": shared,
    }
    if related is not None:
        out["related_pair_precision"] = round(shared_related / shared, 4) if shared else 0.0
    return out


def quiet_gap_baseline(alarms: list[Alarm], gap_s: int = 900) -> list[int]:
    """One signal per device per quiet gap: a device's alarm starting more than `gap_s` after
    its previous one opens a new signal."""
    out = [0] * len(alarms)
    last: dict[int, int] = {}
    current: dict[int, int] = {}
    next_id = 0
    for a in sorted(alarms, key=lambda a: (a.start, a.row)):
        if a.device not in last or a.start - last[a.device] > gap_s:
            current[a.device] = next_id
            next_id += 1
        last[a.device] = a.start
        out[a.row] = current[a.device]
    return out


def grouping_report(
    alarms: list[Alarm], signal_of: list[Any], linked: np.ndarray, related: np.ndarray | None = None
) -> dict[str, Any]:
    signals = len(set(signal_of))
    return {
        "signals": signals,
        "noise_reduction": round(1 - signals / len(alarms), 4),
        **pair_scores(alarms, signal_of, linked, related),
    }
