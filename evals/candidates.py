"""Candidate mining and readiness on a real ticket history: every ticket of a CSV replayed as one
tenant through the automation service's own ticket handler (created, then resolved, in file
order, the PSA category from the label column), into a fresh database, then mined.

    msp eval candidates --data ../shared/data/tickets/it_service_tickets.csv.gz [--limit N]

Prints JSON: the replay and mining times, the top candidates with their ticket counts and share
of all tickets, and the readiness report. The set has no timestamps, so handling times are
unknown and candidates rank by count (the report says so).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from libs.common.db import make_engine, migrate
from libs.common.embeddings import Embedder
from libs.common.events import EventSource, TicketEvent, TicketEventPayload, TicketSnapshot
from libs.common.settings import REPO_ROOT
from services.automation.automations import Automations
from services.automation.handlers import Lifecycle
from services.automation.interpret import LocalInterpreter
from services.automation.miner import Miner

TENANT = "history"


class _NoRelay:
    """Nothing is published in an evaluation: the outbox rows stay in the throwaway database."""

    def wake(self) -> None:
        return None


def _progress(msg: str) -> None:
    print(f"[eval candidates] {msg}", file=sys.stderr, flush=True)


def _rows(data: Path, text_col: str, label_col: str, limit: int | None) -> list[tuple[str, str]]:
    raw = gzip.open(data, "rt", encoding="utf-8") if data.suffix == ".gz" else data.open(encoding="utf-8")
    with raw as fh:
        reader = csv.DictReader(io.StringIO(fh.read()))
        if (
            reader.fieldnames is None
            or text_col not in reader.fieldnames
            or label_col not in reader.fieldnames
        ):
            raise ValueError(
                f"{data} needs columns {text_col!r} and {label_col!r}; it has {reader.fieldnames}"
            )
        rows = [(r[text_col], r[label_col]) for r in reader if r[text_col].strip()]
    return rows[:limit] if limit else rows


def _event(n: int, kind: str, text: str, label: str) -> TicketEvent:
    words = text.split()
    return TicketEvent(
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"eval:{n}:{kind}"),
        tenant_id=TENANT,
        occurred_at=datetime.now(UTC),
        source=EventSource(system="csv", reference=str(n)),
        payload=TicketEventPayload(
            kind=kind,  # type: ignore[arg-type]
            ticket=TicketSnapshot(
                ticket_id=f"T{n}",
                title=" ".join(words[:12])[:1000] or "(empty)",
                description=" ".join(words[12:])[:20000],
                category=label,
                status="resolved" if kind == "resolved" else "new",
            ),
        ),
    )


def evaluate(
    *,
    data: Path,
    cache: Path,
    text_col: str = "Document",
    label_col: str = "Topic_group",
    limit: int | None = None,
) -> dict[str, Any]:
    rows = _rows(data, text_col, label_col, limit)
    embedder = Embedder(store=cache)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'automation.db'}"
        migrate(url, REPO_ROOT / "services" / "automation" / "migrations", "automation")
        engine = make_engine(url)
        interpreter = LocalInterpreter(embedder.encode)
        automations = Automations(engine, _NoRelay())
        life = Lifecycle(engine, _NoRelay(), automations, embed=embedder.encode, interpreter=interpreter)

        async def replay() -> None:
            for n, (text, label) in enumerate(rows):
                await life.handle(_event(n, "created", text, label))
                await life.handle(_event(n, "resolved", text, label))
                if (n + 1) % 5000 == 0:
                    _progress(f"replayed {n + 1}/{len(rows)} tickets")

        t0 = time.perf_counter()
        asyncio.run(replay())
        replay_s = time.perf_counter() - t0
        miner = Miner(engine, automations, embed=embedder.encode, interpreter=interpreter, progress=_progress)
        t1 = time.perf_counter()
        result = miner.compute(TENANT)
        mining_s = time.perf_counter() - t1
        engine.dispose()
    cands = result["candidates"]
    return {
        "data": str(data),
        "tickets": len(rows),
        "replay_s": round(replay_s, 1),
        "mining_s": round(mining_s, 1),
        "mining_breakdown": {
            "clustering_s": cands["took_s"],
            "readiness_s": result["readiness"]["took_s"],
        },
        "ranked_by": cands["ranked_by"],
        "clusters": cands["clusters"],
        "tickets_in_clusters": cands["tickets_in_clusters"],
        "top": [
            {
                "category": c["category"],
                "tickets": c["tickets"],
                "share": c["share"],
                "example": c["examples"][0]["text"][:120],
                "steps": [s["action"] for s in c["steps"]],
            }
            for c in cands["candidates"]
        ],
        "readiness": {
            "pilot": result["readiness"]["pilot"],
            "not_ready": result["readiness"]["not_ready"],
            "categories": result["readiness"]["categories"],
        },
    }
