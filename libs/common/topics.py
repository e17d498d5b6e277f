"""The topic registry: every topic declared once, with its model and its broker settings."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from libs.common.events import (
    AlertReceived,
    AuditCheckpoint,
    AuditEvent,
    AutomationResult,
    AutomationRun,
    DeadLetter,
    Envelope,
    EscalationPacket,
    SignalClustered,
    TicketEvent,
    TicketTriaged,
)

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
DEFAULT_PARTITIONS = 12


@dataclass(frozen=True)
class TopicSpec:
    name: str
    model: type[Envelope] | type[DeadLetter]
    partitions: int = DEFAULT_PARTITIONS
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: str = "delete"
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            **self.extra_config,
        }


# The audit trail and dead letters are kept longer: they are what people look at after the fact.
TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        TopicSpec(AlertReceived.topic, AlertReceived, retention_ms=3 * DAY_MS),
        TopicSpec(TicketEvent.topic, TicketEvent, retention_ms=30 * DAY_MS),
        TopicSpec(SignalClustered.topic, SignalClustered, retention_ms=7 * DAY_MS),
        TopicSpec(TicketTriaged.topic, TicketTriaged, retention_ms=30 * DAY_MS),
        TopicSpec(EscalationPacket.topic, EscalationPacket, retention_ms=30 * DAY_MS),
        TopicSpec(AutomationRun.topic, AutomationRun, retention_ms=30 * DAY_MS),
        TopicSpec(AutomationResult.topic, AutomationResult, retention_ms=30 * DAY_MS),
        TopicSpec(AuditEvent.topic, AuditEvent, retention_ms=90 * DAY_MS),
        # The latest signed head per tenant (keyed by tenant): compacted, kept for ever.
        TopicSpec(AuditCheckpoint.topic, AuditCheckpoint, retention_ms=-1, cleanup_policy="compact"),
        TopicSpec(DeadLetter.topic, DeadLetter, retention_ms=30 * DAY_MS),
    )
}


def physical(name: str, namespace: str = "") -> str:
    """The name on the broker: environments that share a cluster (staging next to production,
    or a test run next to others) keep apart by a namespace prefix."""
    return f"{namespace}.{name}" if namespace else name


def logical(name: str, namespace: str = "") -> str:
    prefix = f"{namespace}." if namespace else ""
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def spec_for(topic: str) -> TopicSpec:
    try:
        return TOPICS[topic]
    except KeyError:
        raise KeyError(f"unknown topic {topic!r}; declared topics: {sorted(TOPICS)}") from None


async def ensure_topics(
    bootstrap_servers: str,
    specs: list[TopicSpec] | None = None,
    *,
    replication_factor: int = 1,
    namespace: str = "",
) -> list[str]:
    """Create the declared topics that do not exist yet; returns the names it created.

    Safe to call any number of times, from any number of processes at once.
    """
    specs = list(TOPICS.values()) if specs is None else specs
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="msp-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if physical(s.name, namespace) not in existing]
        if not missing:
            return []
        new = [
            NewTopic(
                name=physical(s.name, namespace),
                num_partitions=s.partitions,
                replication_factor=replication_factor,
                topic_configs=s.config(),
            )
            for s in missing
        ]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            # Another process created some of them between our list and our create.
            pass
        created = [physical(s.name, namespace) for s in missing]
        log.info("topics created", extra={"topics": created})
        return created
    finally:
        await admin.close()


async def drop_namespace(bootstrap_servers: str, namespace: str, *, timeout_s: float = 30.0) -> list[str]:
    """Delete every topic of a namespace (a benchmark's or an evaluation's own, when it is
    done). Refuses the empty namespace: the platform's topics are never dropped this way."""
    if not namespace:
        raise ValueError("refusing to drop the topics of the empty namespace")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="msp-topics")
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(f"{namespace}.")]
        if doomed:
            await admin.delete_topics(doomed)
            # Deletion completes in the background: wait (boundedly) until the broker agrees.
            deadline = time.monotonic() + timeout_s
            while set(doomed) & set(await admin.list_topics()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topics of {namespace!r} still listed after {timeout_s:.0f} s")
                await asyncio.sleep(0.2)
        return doomed
    finally:
        await admin.close()
