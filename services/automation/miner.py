"""Runs candidate mining and readiness (mining.py) for a tenant over its history in this
service's database, keeps the latest result per tenant, and re-mines tenants whose history
grew, continuously, in the background."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, func, insert, select

from libs.common.embeddings import DIMENSIONS
from libs.common.events import utcnow
from services.automation.automations import Automations, ticket_text
from services.automation.interpret import LocalInterpreter, Ticket
from services.automation.mining import mine, readiness
from services.automation.tables import decisions, mining, runs, ticket_context, tools

log = logging.getLogger(__name__)
Embed = Callable[[Sequence[str]], np.ndarray]


def history(engine: Engine, tenant: str) -> list[dict[str, Any]]:
    """The tenant's resolved tickets in the order they resolved: text, category (the PSA's
    when set, else triage's), handling time, the steps of the platform's succeeded runs on it,
    its notes, and whether an automation ran on it."""
    with engine.connect() as conn:
        ran: dict[str, list[dict[str, Any]]] = {}
        automated: set[str] = set()
        for r in conn.execute(
            select(runs.c.ticket_id, runs.c.steps, runs.c.automation_id, runs.c.requested_by)
            .where(runs.c.tenant_id == tenant, runs.c.status == "succeeded", runs.c.dry_run.is_(False))
            .order_by(runs.c.created_at)
        ):
            if r.ticket_id is None:
                continue
            if r.automation_id:
                automated.add(r.ticket_id)
                continue
            if r.requested_by == "service:automation":  # the platform's own notes
                continue
            ran.setdefault(r.ticket_id, []).extend(
                {"action": s["action"], "params": s["params"]} for s in json.loads(r.steps)
            )
        automated |= {
            r.ticket_id
            for r in conn.execute(
                select(decisions.c.ticket_id).where(
                    decisions.c.tenant_id == tenant, decisions.c.decision == "ran"
                )
            )
        }
        out: list[dict[str, Any]] = []
        for t in conn.execute(
            select(ticket_context)
            .where(ticket_context.c.tenant_id == tenant, ticket_context.c.resolved_at.is_not(None))
            .order_by(ticket_context.c.resolved_at, ticket_context.c.ticket_id)
        ).mappings():
            handling = (
                (t["resolved_at"] - t["opened_at"]).total_seconds() if t["opened_at"] is not None else None
            )
            out.append(
                {
                    "ticket_id": t["ticket_id"],
                    "text": ticket_text(dict(t)),
                    "category": t["psa_category"] or t["category"],
                    "intent": t["intent"],
                    "handling_s": handling if handling and handling >= 1.0 else None,
                    "steps": ran.get(t["ticket_id"]),
                    "notes": t["notes"],
                    "requester": t["requester"],
                    "device": t["device"],
                    "automated": t["ticket_id"] in automated,
                }
            )
    return out


class Miner:
    def __init__(
        self,
        engine: Engine,
        automations_: Automations,
        *,
        embed: Embed,
        interpreter: LocalInterpreter,
        interval_s: float = 600.0,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.automations = automations_
        self.embed = embed
        self.interpreter = interpreter
        self.interval_s = interval_s
        self.progress = progress or (lambda _msg: None)
        self._task: asyncio.Task[None] | None = None

    # --- one tenant ------------------------------------------------------------------------------

    def _steps_from_notes(self, t: dict[str, Any]) -> list[dict[str, Any]] | None:
        notes = " ".join(line.split(":", 1)[-1] for line in (t.get("notes") or "").splitlines())
        if not notes.strip():
            return None
        plan = self.interpreter.interpret(
            notes[:4000], Ticket(requester="{ticket.requester}", device="{ticket.device}", summary=t["text"])
        )
        steps = [{"action": s.action, "params": dict(s.params)} for s in plan.steps if not s.missing]
        return steps or None

    def _propose(self, text: str) -> list[dict[str, Any]]:
        plan = self.interpreter.interpret(
            text[:2000], Ticket(requester="{ticket.requester}", device="{ticket.device}", summary=text)
        )
        seen: set[str] = set()
        out = []
        for s in plan.steps:
            # A ticket's text is not an instruction: only actions it names by their key phrases
            # (a reading by meaning alone guesses too much here) and whose parameters it or the
            # ticket's fields give, each once, in order.
            if s.action not in seen and s.matched_by.startswith("key phrase") and not s.missing:
                seen.add(s.action)
                out.append({"action": s.action, "params": dict(s.params), "missing": list(s.missing)})
        return out

    def compute(self, tenant: str) -> dict[str, Any]:
        """Mine the tenant now and keep the result: {"candidates": ..., "readiness": ...}."""
        t0 = time.perf_counter()
        tickets = history(self.engine, tenant)
        self.progress(f"{len(tickets)} resolved tickets of {tenant}")
        for t in tickets:
            if t["steps"] is None and t["notes"]:
                t["steps"] = self._steps_from_notes(t)
        texts = [t["text"] for t in tickets]
        parts = []
        for start in range(0, len(texts), 2000):  # in parts, to say how far it got
            parts.append(self.embed(texts[start : start + 2000]))
            done = min(start + 2000, len(texts))
            self.progress(f"embedded {done}/{len(texts)} tickets ({time.perf_counter() - t0:.0f} s)")
        vectors = np.concatenate(parts) if parts else np.zeros((0, DIMENSIONS), dtype=np.float32)
        live = [a for a in self.automations.list(tenant) if a["status"] != "retired"]
        examples: list[tuple[str | None, float, str]] = []
        for a in live:
            found = self.automations.get(tenant, a["automation_id"])
            if found and found["versions"]:
                trig = found["versions"][-1]["trigger"]
                examples.append(
                    (trig.get("category"), float(trig.get("threshold") or 0.6), trig.get("example") or "")
                )
        example_vectors = self.embed([e[2] for e in examples]) if examples else None

        def covered(category: str | None, centroid: np.ndarray) -> bool:
            if example_vectors is None:
                return False
            sims = example_vectors @ centroid
            return any(
                (cat is None or cat == category) and float(s) >= thr
                for (cat, thr, _), s in zip(examples, sims, strict=True)
            )

        with self.engine.connect() as conn:
            systems = conn.execute(select(tools.c.systems).where(tools.c.tenant_id == tenant)).scalar()
        t1 = time.perf_counter()
        candidates = mine(
            tickets, vectors, covered=covered, propose=self._propose, tenant_kinds=json.loads(systems or "{}")
        )
        candidates["took_s"] = round(time.perf_counter() - t1, 2)
        self.progress(f"mined {candidates['clusters']} clusters ({candidates['took_s']} s)")
        t2 = time.perf_counter()
        ready = readiness(tickets, vectors)
        ready["took_s"] = round(time.perf_counter() - t2, 2)
        total = round(time.perf_counter() - t0, 2)
        with self.engine.begin() as conn:
            for kind, doc in (("candidates", candidates), ("readiness", ready)):
                conn.execute(delete(mining).where(mining.c.tenant_id == tenant, mining.c.kind == kind))
                conn.execute(
                    insert(mining).values(
                        tenant_id=tenant,
                        kind=kind,
                        tickets=len(tickets),
                        took_s=total,
                        doc=json.dumps(doc, default=str),
                        computed_at=utcnow(),
                    )
                )
        return {"candidates": candidates, "readiness": ready, "took_s": total}

    def latest(self, tenant: str, kind: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(mining).where(mining.c.tenant_id == tenant, mining.c.kind == kind))
                .mappings()
                .first()
            )
            resolved = conn.execute(
                select(func.count())
                .select_from(ticket_context)
                .where(ticket_context.c.tenant_id == tenant, ticket_context.c.resolved_at.is_not(None))
            ).scalar_one()
        if row is None:
            return None
        return {
            **json.loads(row["doc"]),
            "computed_at": row["computed_at"],
            "took_s": row["took_s"],
            "stale": resolved != row["tickets"],
        }

    # --- continuously ------------------------------------------------------------------------------

    def stale_tenants(self) -> list[str]:
        """Tenants whose resolved tickets changed in number since they were last mined."""
        with self.engine.connect() as conn:
            counts: dict[str, int] = dict(
                conn.execute(
                    select(ticket_context.c.tenant_id, func.count())
                    .where(ticket_context.c.resolved_at.is_not(None))
                    .group_by(ticket_context.c.tenant_id)
                ).all()
            )
            mined: dict[str, int] = dict(
                conn.execute(
                    select(mining.c.tenant_id, mining.c.tickets).where(mining.c.kind == "candidates")
                ).all()
            )
        return sorted(t for t, n in counts.items() if mined.get(t) != n)

    async def loop(self) -> None:
        while True:
            try:
                for tenant in await asyncio.to_thread(self.stale_tenants):
                    await asyncio.to_thread(self.compute, tenant)
            except asyncio.CancelledError:
                raise
            except Exception:  # mining is advisory: a failure is logged and tried again later
                log.exception("candidate mining failed; trying again in %.0f s", self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.loop(), name="automation-miner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()
