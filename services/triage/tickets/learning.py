"""The tenants' case memory and models in the running service: a tenant's resolved cases and
its stored model are loaded on its first event, a resolved or closed ticket with a category
joins the memory at once, and the tenant's model is retrained in the background (one at a
time: training takes the CPU) as the history grows. A failed training keeps the previous model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from prometheus_client import Counter
from sqlalchemy import Engine

from libs.common.embeddings import Embedder
from libs.common.events import TicketEvent
from services.triage.tickets import store
from services.triage.tickets.triager import Case, TenantCases, TicketTriager, TriageConfig, ticket_text, train

log = logging.getLogger(__name__)

_LEARNED = Counter("msp_triage_cases_learned_total", "Resolved tickets taken into case memory")
_RETRAINS = Counter("msp_triage_model_retrains_total", "Tenant models (re)trained", ["outcome"])


class CaseMemory:
    """Loads, grows and retrains the case memory of each tenant the process serves. `lock`
    guards the triager's per-tenant state, which the classifier reads from worker threads."""

    def __init__(
        self, *, engine: Engine, embedder: Embedder, config: TriageConfig, lock: threading.Lock
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.config = config
        self.lock = lock
        self.triager: TicketTriager | None = None  # set once the global model is built
        self._loaded: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._train_slot = asyncio.Semaphore(1)

    def _triager(self) -> TicketTriager:
        if self.triager is None:
            raise RuntimeError("the case memory is used before the global model was built")
        return self.triager

    async def load(self, tenant: str) -> None:
        """The tenant's stored cases and model, once per process (until partitions move)."""
        if tenant in self._loaded:
            return
        rows = await asyncio.to_thread(store.load_cases, self.engine, tenant)
        stored = await asyncio.to_thread(store.load_model, self.engine, tenant)
        triager = self._triager()
        with self.lock:
            cases = triager.cases(tenant)
            for case, vector in rows:
                cases.add(case, vector)
            if stored is not None:
                cases.install(*stored)
            self._loaded.add(tenant)
        self._maybe_train(tenant, cases)

    def forget(self) -> None:
        """Partitions moved: drop what is cached per tenant (the database has it all). The
        caller holds the lock."""
        if self.triager is not None:
            self.triager.tenants.clear()
        self._loaded.clear()

    async def learn(self, event: TicketEvent) -> None:
        """A resolved or closed ticket with a category becomes a case of its tenant."""
        tenant, ticket = event.tenant_id, event.payload.ticket
        note = event.payload.note
        case = Case(
            ticket_id=ticket.ticket_id,
            text=ticket_text(ticket),
            category=ticket.category,
            priority=ticket.priority,
            resolution=note.text if note is not None else "",
            url=ticket.url,
        )
        vector = (await asyncio.to_thread(self.embedder.encode, [case.text]))[0]
        triager = self._triager()
        with self.lock:
            cases = triager.cases(tenant)
            changed = cases.add(case, vector)
        if changed:
            await asyncio.to_thread(store.save_case, self.engine, tenant, case, vector)
            _LEARNED.inc()
            self._maybe_train(tenant, cases)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _maybe_train(self, tenant: str, cases: TenantCases) -> None:
        with self.lock:
            if not cases.wants_training(self.config):
                return
            cases.training = True
        task = asyncio.create_task(self._train(tenant, cases))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _train(self, tenant: str, cases: TenantCases) -> None:
        try:
            async with self._train_slot:
                with self.lock:
                    texts, labels, vectors, upto = cases.training_set()
                started = time.perf_counter()
                model = await asyncio.to_thread(train, texts, labels, vectors)
                with self.lock:
                    cases.install(model, upto)
                size = await asyncio.to_thread(store.save_model, self.engine, tenant, model, upto)
            _RETRAINS.labels("ok").inc()
            log.info(
                "tenant model trained",
                extra={
                    "tenant_id": tenant,
                    "cases": len(texts),
                    "seconds": round(time.perf_counter() - started, 1),
                    "stored_bytes": size,
                },
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            _RETRAINS.labels("failed").inc()
            log.exception(
                "tenant model training failed; the previous model stays", extra={"tenant_id": tenant}
            )
        finally:
            cases.training = False
