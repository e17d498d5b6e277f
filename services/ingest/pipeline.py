"""Accepting a request's events: tenant checks, rate limit, ticket lifecycle, atomic publish.

Everything a request carries is published in one Kafka transaction together with its audit
event, so Kafka has all of it or none of it; the answer is 202 only after the commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cachetools import TTLCache
from fastapi import HTTPException, status
from pydantic import ValidationError
from sqlalchemy import Engine

from libs.common.audit import audit_event
from libs.common.bus import AtomicPublisher, PublishError
from libs.common.events import Envelope
from services.ingest import tenants
from services.ingest.adapters.common import TicketObservation
from services.ingest.adapters.lifecycle import classify
from services.ingest.ratelimit import SharedRateLimiter, retry_after_header
from services.ingest.tenants import Principal

log = logging.getLogger(__name__)
RETRY_AFTER_UNAVAILABLE_S = "5"
POSTING_ROLES = {"integration", "admin"}


class Unavailable(Exception):
    """Kafka did not commit the request's events; nothing of it was published."""


@dataclass
class Accepted:
    event_ids: list[str]


class IngestPipeline:
    def __init__(
        self,
        engine: Engine,
        publisher: AtomicPublisher,
        limiter: SharedRateLimiter,
        *,
        max_events: int,
        mapping_cache_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.limiter = limiter
        self.max_events = max_events
        # (source, ref) -> owning tenant; touched on the event loop only.
        self._owners: TTLCache[tuple[str, str], str] = TTLCache(maxsize=50_000, ttl=mapping_cache_s)

    async def accept(
        self,
        caller: Principal,
        source_system: str,
        items: Sequence[Envelope | TicketObservation],
        *,
        refs: set[str] | None = None,
    ) -> Accepted:
        if caller.role not in POSTING_ROLES:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"a key with role {caller.role!r} may not post events"
            )
        if len(items) > self.max_events:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{len(items)} events in one request; the limit is {self.max_events}",
            )
        refs = set(refs or ()) | {
            i.company_ref for i in items if isinstance(i, TicketObservation) and i.company_ref
        }
        await self._check_refs(caller, source_system, refs)
        wait = await self.limiter.take(caller.tenant_id, max(1, len(items)))
        if wait:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"rate limit for tenant {caller.tenant_id} exceeded",
                headers={"Retry-After": retry_after_header(wait)},
            )
        try:
            events, states = await self._events(caller.tenant_id, source_system, items)
        except ValidationError as exc:  # the ticket as the PSA states it cannot make a valid event
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()],
            ) from None
        if events:
            ids = [str(e.event_id) for e in events]
            request_ref = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
            audit = audit_event(
                service="ingest",
                tenant_id=caller.tenant_id,
                action=f"ingest.{source_system}.accepted",
                subject_kind="request",
                subject_id=request_ref,
                cause_id=request_ref,
                actor=f"key:{caller.key_id}",
                details={"count": len(ids), "event_ids": ids[:100]},
            )
            try:
                await self.publisher.publish([*events, audit])
            except PublishError as exc:
                raise Unavailable(str(exc)) from exc
            except ValueError as exc:  # text that cannot be encoded (lone surrogates and the like)
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT, f"the payload cannot be encoded as an event: {exc}"
                ) from None
        if states:
            try:
                await asyncio.to_thread(
                    tenants.save_ticket_states, self.engine, caller.tenant_id, source_system, states
                )
            except Exception:  # the events are committed; only later diffs are less precise
                log.exception("could not save ticket state", extra={"tenant_id": caller.tenant_id})
        return Accepted([str(e.event_id) for e in events])

    async def _check_refs(self, caller: Principal, source_system: str, refs: set[str]) -> None:
        """A payload that names a client company or site mapped to another tenant is refused:
        the key decides the tenant, and the payload may not contradict it."""
        if not refs:
            return
        # Only known owners are cached: mappings are never moved between tenants, but a ref
        # that is unmapped now may be mapped a second later, and must then be enforced at once.
        owners: dict[str, str] = {}
        unknown = set()
        for ref in refs:
            cached = self._owners.get((source_system, ref))
            if cached is None:
                unknown.add(ref)
            else:
                owners[ref] = cached
        if unknown:
            found = await asyncio.to_thread(tenants.owner_of, self.engine, source_system, unknown)
            for ref, owner in found.items():
                self._owners[(source_system, ref)] = owner
            owners.update(found)
        foreign = sorted(ref for ref, owner in owners.items() if owner != caller.tenant_id)
        if foreign:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"{source_system} {', '.join(foreign)} belongs to another tenant"
            )

    async def _events(
        self, tenant_id: str, source_system: str, items: Sequence[Envelope | TicketObservation]
    ) -> tuple[list[Envelope], dict[str, dict[str, object]]]:
        observations = [i for i in items if isinstance(i, TicketObservation)]
        if not observations:
            return list(items), {}  # type: ignore[arg-type]
        known = await asyncio.to_thread(
            tenants.load_ticket_states,
            self.engine,
            tenant_id,
            source_system,
            {o.ticket_id for o in observations},
        )
        states: dict[str, dict[str, object]] = {}
        events: list[Envelope] = []
        for item in items:
            if isinstance(item, TicketObservation):
                event, states[item.ticket_id] = classify(
                    tenant_id, item, states.get(item.ticket_id) or known.get(item.ticket_id)
                )
                events.append(event)
            else:
                events.append(item)
        return events, states
