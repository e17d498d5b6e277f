"""Anchoring the audit chain outside its database: at an interval the audit service publishes
each tenant's chain head (sequence and hash), signed with a key the database never holds, to
the compacted `audit.checkpoints.v1` topic; `verify` checks the trail against the latest one.

A writer of the database alone can rewrite the whole trail and recompute every hash, but not
the anchored head: the rewritten chain no longer holds that hash at that sequence.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from sqlalchemy import Engine, select

from libs.common.bus import EventProducer
from libs.common.events import AuditCheckpoint, AuditCheckpointPayload, EventSource, derive_event_id, utcnow
from libs.common.topics import physical
from services.audit.tables import chain_heads

log = logging.getLogger(__name__)


def sign(key: bytes, tenant_id: str, tenant_seq: int, head_hash: str) -> str:
    return hmac.new(key, f"{tenant_id}\n{tenant_seq}\n{head_hash}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Anchor:
    tenant_seq: int
    hash: str
    valid: bool  # its signature checks out with this service's key


class Anchoring:
    """Publishes the heads that moved, and keeps the latest checkpoint of every tenant as read
    back from the topic (what `verify` compares with)."""

    def __init__(
        self,
        engine: Engine,
        producer: EventProducer,
        key: bytes,
        bootstrap: str,
        *,
        namespace: str = "",
        every_s: float = 60.0,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.key = key
        self.bootstrap = bootstrap
        self.namespace = namespace
        self.every_s = every_s
        self.latest: dict[str, Anchor] = {}
        self._published: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.running = False

    async def start(self) -> None:
        self.running = True
        self._tasks = [
            asyncio.create_task(self._read(), name="audit-anchor-reader"),
            asyncio.create_task(self._publish_forever(), name="audit-anchor-writer"),
        ]

    async def stop(self) -> None:
        self.running = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def publish_heads(self) -> int:
        """Publish a checkpoint for every tenant whose head moved since the last one."""
        with self.engine.connect() as conn:
            heads = conn.execute(
                select(chain_heads.c.tenant_id, chain_heads.c.tenant_seq, chain_heads.c.hash)
            ).all()
        events = []
        now = utcnow()
        for tenant, seq, head in heads:
            if self._published.get(tenant) == seq:
                continue
            events.append(
                AuditCheckpoint(
                    event_id=derive_event_id(tenant, "audit-checkpoint", str(seq), head),
                    tenant_id=tenant,
                    occurred_at=now,
                    source=EventSource(system="msp.audit", reference=f"{tenant}:{seq}"),
                    payload=AuditCheckpointPayload(
                        tenant_seq=seq, hash=head, signed_at=now, signature=sign(self.key, tenant, seq, head)
                    ),
                )
            )
        if events:
            await self.producer.publish_many(events)
            for e in events:
                self._published[e.tenant_id] = e.payload.tenant_seq
        return len(events)

    async def _publish_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.publish_heads()
            except Exception:  # noqa: BLE001 - the next interval tries again
                log.exception("publishing audit checkpoints failed")

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            physical(AuditCheckpoint.topic, self.namespace),
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        self._take(r.value)
        finally:
            await consumer.stop()

    def _take(self, raw: bytes | None) -> None:
        try:
            event = AuditCheckpoint.model_validate_json(raw or b"")
        except ValueError:
            log.warning("unreadable audit checkpoint ignored")
            return
        p = event.payload
        valid = hmac.compare_digest(p.signature, sign(self.key, event.tenant_id, p.tenant_seq, p.hash))
        known = self.latest.get(event.tenant_id)
        if known is None or p.tenant_seq >= known.tenant_seq:
            self.latest[event.tenant_id] = Anchor(p.tenant_seq, p.hash, valid)

    def describe(self, tenant_id: str) -> dict[str, Any] | None:
        a = self.latest.get(tenant_id)
        return None if a is None else {"tenant_seq": a.tenant_seq, "hash": a.hash, "signature_valid": a.valid}


def check_against(anchor: Anchor | None, found: str | None) -> str | None:
    """Why the trail does not hold the anchored head (`found`: the trail's hash at the anchored
    sequence); None when it does, or when nothing is anchored yet."""
    if anchor is None or anchor.tenant_seq == 0:
        return None
    if not anchor.valid:
        return "the latest checkpoint's signature does not match (not signed by this audit service)"
    if found is None:
        return f"the trail no longer reaches the anchored entry {anchor.tenant_seq}"
    if found != anchor.hash:
        return f"entry {anchor.tenant_seq} differs from its anchored hash: the trail was rewritten"
    return None
