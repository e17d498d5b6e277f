"""Candidate mining and readiness, per tenant, from its resolved tickets. Pure: the caller
passes the tickets (store.history), their embeddings and an interpreter.

Candidates: recurring work without an automation. Resolved tickets are grouped by category,
then clustered by meaning (leader clustering on sentence embeddings: a ticket joins the first
cluster whose leader it reads like at `similar` cosine or more, in order of arrival) and, where
the resolution steps are known (the platform's runs, or steps read from the notes), split by
those steps. Clusters an automation of the tenant already covers are left out. Rank: tickets ×
median handling time (when the history has handling times; else tickets alone, and it says so).
Each candidate shows what it would do (its known steps, else the steps its tickets' text asks
for) and, where steps run on a directory, a variant per kind of directory (on-prem AD, Entra ID).

Readiness: per category, volume, how repetitive the tickets are (share in clusters of two or
more), how consistent the labels are (near-identical tickets carrying the same category), how
often the resolution is written down well enough to give steps, and the handling time; from it
the recommended pilot and the categories not ready yet, with why.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from services.automation.connectors import KINDS, SYSTEMS
from services.automation.maintain import VARIANTS

SIMILAR = 0.8  # cosine at which two tickets count as the same kind of work
NEAR_IDENTICAL = 0.95  # cosine at which two tickets should carry the same category
MIN_CLUSTER = 3
CHUNK = 512


def leader_clusters(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster index per row: each row joins the most similar earlier leader at `threshold` or
    more, else leads a new cluster. Rows are taken in order (arrival order), in chunks: the
    leaders a chunk is compared against are those before it plus those it made so far."""
    n = len(vectors)
    labels = np.full(n, -1, dtype=np.int64)
    leaders: list[int] = []
    leader_matrix = np.zeros((0, vectors.shape[1]), dtype=vectors.dtype) if n else np.zeros((0, 1))
    for start in range(0, n, CHUNK):
        block = vectors[start : start + CHUNK]
        sims = block @ leader_matrix.T if len(leaders) else np.zeros((len(block), 0))
        fresh: list[int] = []
        for i in range(len(block)):
            best, where = -1.0, -1
            if sims.shape[1]:
                where = int(sims[i].argmax())
                best = float(sims[i, where])
            if fresh:
                local = vectors[fresh] @ block[i]
                j = int(local.argmax())
                if float(local[j]) > best:
                    best, where = float(local[j]), len(leaders) + j
            if best >= threshold:
                labels[start + i] = where
            else:
                labels[start + i] = len(leaders) + len(fresh)
                fresh.append(start + i)
        if fresh:
            leaders.extend(fresh)
            leader_matrix = vectors[leaders]
    return labels


def _signature(steps: Sequence[dict[str, Any]] | None) -> tuple[str, ...] | None:
    return tuple(s["action"] for s in steps) if steps else None


def variants(steps: list[dict[str, Any]], tenant_kinds: dict[str, str]) -> list[dict[str, Any]]:
    """For steps on a system that more than one kind of tool serves (identity: on-prem AD or
    Entra ID; RMM: NinjaOne or Datto), the steps per kind: the same step where that kind
    supports it, its variant where the catalogue has one, else marked as a manual step."""
    out = []
    systems = {s["action"].split(".", 1)[0] for s in steps}
    for system in sorted(systems):
        kinds = SYSTEMS.get(system, ())
        if len(kinds) < 2:
            continue
        for kind in kinds:
            supported = KINDS[kind].actions - KINDS[kind].unsupported
            shown = []
            for s in steps:
                if s["action"].split(".", 1)[0] != system or s["action"] in supported:
                    shown.append({**s, "runs_as": "is"})
                elif (kind, s["action"]) in VARIANTS:
                    shown.append(
                        {**s, "action": VARIANTS[(kind, s["action"])], "runs_as": f"variant of {s['action']}"}
                    )
                else:
                    shown.append({**s, "runs_as": "manual: this kind of system has no such operation"})
            out.append(
                {
                    "system": system,
                    "kind": kind,
                    "tenant_uses": tenant_kinds.get(system) == kind,
                    "steps": shown,
                }
            )
    return out


def mine(
    tickets: Sequence[dict[str, Any]],
    vectors: np.ndarray,
    *,
    covered: Callable[[str | None, np.ndarray], bool],
    propose: Callable[[str], list[dict[str, Any]]],
    tenant_kinds: dict[str, str] | None = None,
    top: int = 10,
    similar: float = SIMILAR,
    min_cluster: int = MIN_CLUSTER,
) -> dict[str, Any]:
    """`tickets`: resolved, in time order, each with text, category, handling_s (or None),
    steps (known resolution steps or None), automated (an automation ran on it). `vectors`:
    their normalised embeddings. `covered(category, centroid)`: an automation already fits.
    `propose(text)`: the catalogue steps a ticket text asks for."""
    total = len(tickets)
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tickets):
        if not t.get("automated"):
            by_category[t.get("category") or "uncategorised"].append(i)
    clusters: list[dict[str, Any]] = []
    for category, rows in by_category.items():
        labels = leader_clusters(vectors[rows], similar)
        groups: dict[tuple[int, tuple[str, ...] | None], list[int]] = defaultdict(list)
        for row, label in zip(rows, labels, strict=True):
            groups[(int(label), _signature(tickets[row].get("steps")))].append(row)
        # Tickets with unknown steps join the cluster's most common known signature, if any.
        by_label: dict[int, dict[tuple[str, ...] | None, list[int]]] = defaultdict(dict)
        for (label, sig), members in groups.items():
            by_label[label][sig] = members
        for parts in by_label.values():
            known = {s: m for s, m in parts.items() if s is not None}
            unknown = parts.get(None, [])
            if known and unknown:
                main = max(known, key=lambda s: len(known[s]))
                known[main] = known[main] + unknown
                unknown = []
            for sig, members in [*known.items(), *([(None, unknown)] if unknown else [])]:
                if len(members) >= min_cluster:
                    clusters.append({"category": category, "signature": sig, "members": sorted(members)})
    out = []
    for c in clusters:
        members = c["members"]
        centroid = vectors[members].mean(axis=0)
        centroid = centroid / (np.linalg.norm(centroid) or 1.0)
        if covered(c["category"], centroid):
            continue
        times = [tickets[m]["handling_s"] for m in members if tickets[m].get("handling_s")]
        handling = statistics.median(times) if len(times) >= max(1, len(members) // 2) else None
        c.update(
            count=len(members),
            handling_s=handling,
            score=len(members) * (handling or 1.0),
            centroid=centroid,
        )
        out.append(c)
    timed = any(c["handling_s"] for c in out)
    out.sort(key=lambda c: (-(c["score"] if timed else c["count"]), c["members"][0]))
    shown = []
    for c in out[:top]:
        members = c["members"]
        sims = vectors[members] @ c["centroid"]
        typical = [members[int(j)] for j in np.argsort(-sims)[:3]]
        known_steps = next((tickets[m]["steps"] for m in members if tickets[m].get("steps")), None)
        steps = known_steps or propose(tickets[typical[0]]["text"])
        shown.append(
            {
                "category": c["category"],
                "tickets": c["count"],
                "share": round(c["count"] / total, 4) if total else 0.0,
                "median_handling_s": c["handling_s"],
                "score": round(c["score"], 1),
                "examples": [
                    {"ticket_id": tickets[m]["ticket_id"], "text": tickets[m]["text"][:200]} for m in typical
                ],
                "ticket_ids": [tickets[m]["ticket_id"] for m in members[:50]],
                "steps": steps,
                "steps_from": "resolutions" if known_steps else "ticket text (resolutions not recorded)",
                "variants": variants(steps, tenant_kinds or {}),
            }
        )
    return {
        "resolved_tickets": total,
        "clusters": len(out),
        "tickets_in_clusters": sum(c["count"] for c in out),
        "ranked_by": "tickets x median handling time"
        if timed
        else "tickets (the history has no handling times)",
        "candidates": shown,
    }


def readiness(
    tickets: Sequence[dict[str, Any]],
    vectors: np.ndarray,
    *,
    similar: float = SIMILAR,
    near_identical: float = NEAR_IDENTICAL,
    min_volume: int = 50,
) -> dict[str, Any]:
    """The tenant's history judged category by category, and the pilot it suggests."""
    total = len(tickets)
    if total == 0:
        return {"resolved_tickets": 0, "categories": [], "pilot": None, "not_ready": []}
    same = leader_clusters(vectors, near_identical)  # across categories: should agree on the label
    groups: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(same):
        groups[int(label)].append(i)
    disagree = np.zeros(total, dtype=bool)
    paired = np.zeros(total, dtype=bool)
    for members in groups.values():
        if len(members) < 2:
            continue
        majority, _ = Counter(tickets[m].get("category") for m in members).most_common(1)[0]
        for m in members:
            paired[m] = True
            disagree[m] = tickets[m].get("category") != majority
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tickets):
        by_category[t.get("category") or "uncategorised"].append(i)
    rows: list[dict[str, Any]] = []
    for category, members in by_category.items():
        labels = leader_clusters(vectors[members], similar)
        sizes = Counter(labels.tolist())
        repetitive = sum(1 for lab in labels if sizes[lab] >= 2) / len(members)
        pairs = int(paired[members].sum())
        consistency = 1.0 - float(disagree[members].sum()) / pairs if pairs else None
        documented = sum(1 for m in members if tickets[m].get("steps")) / len(members)
        times = [tickets[m]["handling_s"] for m in members if tickets[m].get("handling_s")]
        rows.append(
            {
                "category": category,
                "volume": len(members),
                "share": round(len(members) / total, 4),
                "near_duplicate_share": round(repetitive, 4),
                "label_consistency": round(consistency, 4) if consistency is not None else None,
                "near_identical_pairs": pairs,
                "documented_resolutions": round(documented, 4),
                "median_handling_s": statistics.median(times) if times else None,
                "largest_cluster": max(sizes.values()),
            }
        )
    not_ready: list[dict[str, Any]] = []
    ready: list[dict[str, Any]] = []
    r: dict[str, Any]
    for r in rows:
        why = []
        if r["volume"] < min_volume:
            why.append(f"only {r['volume']} resolved tickets (fewer than {min_volume})")
        if r["label_consistency"] is not None and r["label_consistency"] < 0.8:
            why.append(
                f"labels disagree: {1 - r['label_consistency']:.0%} of near-identical tickets "
                "carry another category"
            )
        if r["near_duplicate_share"] < 0.2:
            why.append(f"little repetition ({r['near_duplicate_share']:.0%} of tickets have a near twin)")
        (not_ready if why else ready).append({**r, "why": why})
    documented_any = any(r["documented_resolutions"] > 0 for r in rows)

    def score(r: dict[str, Any]) -> float:
        s = float(r["volume"]) * float(r["near_duplicate_share"]) * float(r["label_consistency"] or 0.5)
        return s * (0.2 + float(r["documented_resolutions"])) if documented_any else s

    ready.sort(key=score, reverse=True)
    pilot = None
    if ready:
        best = ready[0]
        expected = int(best["volume"] * best["near_duplicate_share"])
        pilot = {
            "category": best["category"],
            "mode": "shadow, then suggest",
            "why": (
                f"{best['volume']} resolved tickets ({best['share']:.0%} of all), "
                f"{best['near_duplicate_share']:.0%} of them with a near twin, labels "
                + (
                    f"{best['label_consistency']:.0%} consistent"
                    if best["label_consistency"] is not None
                    else "without near-identical pairs to check"
                )
            ),
            "metrics_to_watch": [
                "share of the category's tickets an automation matches (shadow decisions)",
                "suggestions confirmed vs ignored",
                "time to resolve with and without a suggestion",
                "reopen rate",
                "engineer time reviewing suggestions",
            ],
            "expected_effect": (
                f"up to {expected} of its {best['volume']} tickets repeat work an automation could do"
                + (
                    f", about {expected * best['median_handling_s'] / 3600:.0f} engineer hours at its "
                    "median handling time"
                    if best["median_handling_s"]
                    else "; the history has no handling times to turn that into hours"
                )
            ),
            "before_starting": []
            if documented_any
            else [
                "resolutions are not written down as steps: resolve through the platform's instructions, "
                "or note the steps taken, so drafts can be made"
            ],
        }
    return {
        "resolved_tickets": total,
        "categories": sorted(rows, key=lambda r: -r["volume"]),
        "pilot": pilot,
        "not_ready": [{"category": r["category"], "why": r["why"]} for r in not_ready],
    }
