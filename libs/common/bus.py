"""The bus: a tenant-keyed producer and a consumer loop with dead-lettering, on aiokafka.

Producer: every event is keyed by its `tenant_id` (one tenant, one partition, one order), sent
with acks=all and idempotence on, with the tenant and type in headers and the W3C trace context
alongside. Consumer: at-least-once; an offset is committed only after the handler returned
(its effect is durable), a poison event goes to `deadletter.v1` and the loop moves on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, InvalidProducerEpoch, OutOfOrderSequenceNumber
from aiokafka.structs import RecordMetadata
from opentelemetry.trace import SpanContext
from prometheus_client import Counter as Metric
from pydantic import ValidationError

from libs.common.events import DeadLetter, Envelope
from libs.common.telemetry import (
    CONSUMER_LAG,
    DEADLETTERED,
    EVENTS_CONSUMED,
    EVENTS_PUBLISHED,
    HANDLER_SECONDS,
    BatchedObservations,
    batch_span,
    consumer_context,
    inject_headers,
    span_from_headers,
    trace_runs,
)
from libs.common.topics import logical, physical, spec_for

log = logging.getLogger(__name__)
LAG_REPORT_S = 1.0  # how often a consumer brings its lag gauges up to date
DEPENDENCY_WAITS = Metric(
    "msp_consumer_dependency_waits_total",
    "Times a consumer held an event because the database or the broker was unavailable",
    ["service"],
)


# What a broker that restarted and lost an idempotent producer's sequence state answers to its
# next batches: that producer can never send again, a new one (a new producer id) can.
_PRODUCER_STATE_LOST = (OutOfOrderSequenceNumber, InvalidProducerEpoch)


def unavailable(exc: BaseException) -> bool:
    """Whether a handler failed because a dependency is down (the database cannot be reached,
    the broker does not answer) rather than because of the event."""
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, NodeNotReadyError
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, PublishError):  # down if everything that went wrong says so
        return bool(exc.causes) and all(unavailable(c) for c in exc.causes)
    if isinstance(exc, KafkaError) and exc.retriable:  # a leader moving, a broker restarting
        return True
    if isinstance(exc, _PRODUCER_STATE_LOST):  # the producer that got it has been renewed
        return True
    return isinstance(
        exc,
        OperationalError
        | InterfaceError
        | KafkaConnectionError
        | KafkaTimeoutError
        | NodeNotReadyError
        | ConnectionError,
    )


async def wait_for_dependency(service: str, exc: BaseException, wait_s: float, what: str) -> float:
    """Wait `wait_s` (at most 5 s) because a dependency is down, saying so in the log and in
    `msp_consumer_dependency_waits_total`; returns the wait, to double for the next one."""
    wait_s = min(5.0, wait_s)
    log.warning(
        f"a dependency is unavailable; {what} waits for it",
        extra={"error": str(exc).splitlines()[0][:200], "retry_in_s": wait_s},
    )
    DEPENDENCY_WAITS.labels(service).inc()
    await asyncio.sleep(wait_s)
    return wait_s


H_TENANT = "tenant_id"
H_TYPE = "event_type"
H_VERSION = "schema_version"


class TenantMismatch(ValueError):
    """Key, header and body disagree about the tenant: the event is refused, never guessed."""


class StateLost(RuntimeError):
    """Raised by a batch handler whose in-memory state can no longer be trusted (a batch
    failed half-way). The consumer stops without committing anything more, and the process
    exits: on restart the service reloads its last checkpoint and the uncommitted records
    are delivered again, so nothing is lost."""


class _ClientFailed(Exception):
    """The Kafka client stopped taking part in its consumer group and will not recover."""


def _cancelled_from_outside() -> bool:
    """Whether the running task is being cancelled (a stop), as opposed to a cancellation that
    surfaced from inside a library."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class PublishError(RuntimeError):
    """Kafka did not acknowledge an event (broker down, timeout, not enough replicas).
    `causes` are the client's errors, when it gave any (see `unavailable`)."""

    def __init__(self, message: str, causes: Sequence[BaseException] = ()) -> None:
        super().__init__(message)
        self.causes = list(causes)


def encode(
    event: Envelope, trace_headers: list[tuple[str, bytes]] | None = None
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of an event as they go on the wire.

    `trace_headers` lets a caller that encodes many events in one context compute the W3C
    trace headers once; by default they are taken from the current context.
    """
    tenant = event.tenant_id.encode()
    headers = [
        (H_TENANT, tenant),
        (H_TYPE, event.type.encode()),
        (H_VERSION, str(event.schema_version).encode()),
        *(inject_headers() if trace_headers is None else trace_headers),
    ]
    return tenant, event.model_dump_json().encode(), headers


def decode(topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> Any:
    """Parse a record of a declared topic into its model and check the tenant three ways."""
    return decoder(topic)(key, value, headers)


def decoder(topic: str) -> Callable[[bytes | None, bytes | None, Sequence[tuple[str, bytes]]], Any]:
    """`decode` for one topic, with its model's validator looked up once (a consumer's route)."""
    model = spec_for(topic).model
    validate_json = model.__pydantic_validator__.validate_json
    envelope = issubclass(model, Envelope)

    def decode_record(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> Any:
        if value is None:
            raise ValueError("empty record value (tombstone) on an event topic")
        event = validate_json(value)
        if envelope:
            check_tenant(event.tenant_id, key, headers)
        return event

    return decode_record


def check_tenant(body_tenant: str, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> None:
    header = None
    for name, value in headers:
        if name == H_TENANT:
            header = value
            break
    expected = body_tenant.encode()
    if key != expected or header != expected:
        key_tenant = key.decode("utf-8", "replace") if key is not None else None
        header_tenant = header.decode("utf-8", "replace") if header is not None else None
        raise TenantMismatch(
            f"tenant mismatch: key={key_tenant!r} header={header_tenant!r} body={body_tenant!r}"
        )


def _checked_topic(topic: str, event: Envelope) -> str:
    if spec_for(topic).model is not type(event):
        raise TypeError(f"topic {topic} carries {spec_for(topic).model.__name__}, not {type(event).__name__}")
    return topic


def _reliable_producer(bootstrap_servers: str, client_id: str, **settings: Any) -> dict[str, Any]:
    """Producer settings every platform producer shares: acknowledged by all in-sync replicas,
    idempotent (no duplicates on retry); callers add their own."""
    return dict(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        **settings,
    )


class EventProducer:
    """Publishes events keyed by tenant; every publish waits for the broker's acknowledgement."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        linger_ms: int = 5,
        request_timeout_ms: int = 15000,
        compression_type: str | None = None,
        namespace: str = "",
    ) -> None:
        self.namespace = namespace
        self._config = _reliable_producer(
            bootstrap_servers,
            client_id,
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            request_timeout_ms=request_timeout_ms,
            compression_type=compression_type,
        )
        self._producer: AIOKafkaProducer
        self.started = False

    async def start(self) -> None:
        # aiokafka binds its clients to the running loop: create them here, not in __init__.
        self._producer = AIOKafkaProducer(**self._config)
        await self._producer.start()
        self.started = True

    async def stop(self) -> None:
        if self.started:
            self.started = False
            await self._producer.stop()

    async def renew(self) -> None:
        """Replace the Kafka client with a fresh one (new connections, metadata, producer id):
        for a caller whose sends keep failing after the broker came back. Sends in flight on
        the old client fail, and their callers retry as they do for any failed send."""
        if not self.started:
            return
        old, self._producer = self._producer, AIOKafkaProducer(**self._config)
        await self._producer.start()
        try:
            await asyncio.wait_for(old.stop(), timeout=5)
        except Exception:  # noqa: BLE001 - the old client is abandoned either way
            log.warning("the replaced Kafka producer did not stop cleanly")

    async def publish(self, event: Envelope, *, topic: str | None = None) -> RecordMetadata:
        return (await self.publish_many([event], topic=topic))[0]

    async def publish_many(
        self, events: Iterable[Envelope], *, topic: str | None = None
    ) -> list[RecordMetadata]:
        """Send all events, then wait until Kafka has every one of them (acks=all).

        `topic` overrides each event's own topic; it must be declared for the same model.
        Raises `PublishError` if any was not acknowledged.
        """
        futures = []
        topics = []
        trace_headers = inject_headers()  # one context for the whole call
        for event in events:
            dest = physical(event.topic if topic is None else _checked_topic(topic, event), self.namespace)
            key, value, headers = encode(event, trace_headers)
            futures.append(await self._producer.send(dest, value, key=key, headers=headers))
            topics.append(dest)
        return await self._await_acks(futures, topics)

    async def send_raw_many(
        self, records: Sequence[tuple[str, bytes | None, bytes, Sequence[tuple[str, bytes]]]]
    ) -> list[RecordMetadata]:
        """Send records already encoded (physical topic, key, value, headers), then wait until
        Kafka has every one (an outbox relays what it stored, byte for byte)."""
        futures = [
            await self._producer.send(topic, value, key=key, headers=list(headers))
            for topic, key, value, headers in records
        ]
        return await self._await_acks(futures, [r[0] for r in records])

    async def send_raw(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> RecordMetadata:
        """For dead letters and tests that must write what a model would refuse."""
        fut = await self._producer.send(topic, value, key=key, headers=list(headers))
        return (await self._await_acks([fut], [topic]))[0]

    async def _await_acks(
        self, futures: list[asyncio.Future[RecordMetadata]], topics: list[str]
    ) -> list[RecordMetadata]:
        results = await asyncio.gather(*futures, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if any(isinstance(f, _PRODUCER_STATE_LOST) for f in failures):
            # The broker restarted and forgot this producer's sequence numbers: every later
            # send of this client would be refused the same way. A fresh client gets a new
            # producer id; the caller retries as for any failed send (`unavailable` says so).
            log.warning(
                "the broker lost the producer's state; renewing the producer",
                extra={"error": repr(failures[0])},
            )
            await self.renew()
        if failures:
            raise PublishError(
                f"{len(failures)} of {len(results)} events not acknowledged: {failures[0]!r}", failures
            )
        for topic in set(topics):
            EVENTS_PUBLISHED.labels(topic).inc(topics.count(topic))
        return results


Handler = Callable[[Any, ConsumerRecord[bytes, bytes]], Awaitable[None]]
# Takes every decoded event of one poll at once, in partition order: for work that gains from
# batching (a state write and a publish per batch rather than per event).
BatchHandler = Callable[[list[tuple[Any, ConsumerRecord[bytes, bytes]]]], Awaitable[None]]


@dataclass(slots=True)
class _Route:
    """What the per-event path needs about one (physical) topic, worked out once."""

    topic: str  # the logical (declared) topic
    decode: Callable[[bytes | None, bytes | None, Sequence[tuple[str, bytes]]], Any]
    span_name: str
    span_attrs: dict[str, Any]
    ok: Any  # the topic's "ok" counter child
    handled: int = 0  # handled since the counter was last brought up to date

    def flush(self) -> None:
        if self.handled:
            self.ok.inc(self.handled)
            self.handled = 0


@dataclass
class ConsumerStats:
    handled: int = 0
    deadlettered: int = 0
    commits_refused: int = 0  # commits the group refused after it rebalanced without us
    reconnects: int = 0  # clients replaced after they left their group for good
    last_error: str | None = None


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner._commit_pending()
        self.owner._forget_lag(revoked)
        if self.owner.on_revoke is not None and revoked:
            await self.owner.on_revoke()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner._joined = True
        log.info(
            "partitions assigned",
            extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)},
        )


class EventConsumer:
    """At-least-once consumer loop over declared topics, with dead-lettering of poison events.

    The handler gets the decoded model and the raw record. A record that cannot be decoded,
    whose tenant disagrees between key, header and body, or whose handler keeps failing
    (after `max_attempts`), is published to `deadletter.v1`; only then is its offset committed.

    With `lanes` above 1, the events of one poll are handled in lanes by record key (the
    tenant): one key's events in their order, up to `lanes` keys at once, each event with its
    own retries and dead-lettering; a partition's offset is committed up to the first event
    not yet handled. For handlers whose work waits on I/O (a database, a PSA) and whose effects
    are keyed per tenant.
    """

    def __init__(
        self,
        *,
        service: str,
        topics: Sequence[str],
        group_id: str,
        bootstrap_servers: str,
        handler: Handler | None = None,
        producer: EventProducer,
        batch_handler: BatchHandler | None = None,
        on_revoke: Callable[[], Awaitable[None]] | None = None,
        batch_linger_s: float = 0.05,
        checkpoint: Callable[[], Awaitable[None]] | None = None,
        commit_every_s: float = 0.0,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.2,
        max_records: int = 500,
        auto_offset_reset: str = "earliest",
        namespace: str = "",
        lanes: int = 1,
        max_poll_interval_s: float = 300.0,
    ) -> None:
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        if lanes > 1 and batch_handler is not None:
            raise ValueError("lanes are for a per-event handler; a batch handler sees the whole batch")
        self.lanes = lanes
        self.service = service
        self.namespace = namespace
        self.topics = list(topics)
        for t in self.topics:
            spec_for(t)  # refuse undeclared topics at construction, not at first message
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        self.handler = handler
        self.batch_handler = batch_handler
        self.on_revoke = on_revoke
        self.batch_linger_s = batch_linger_s
        self.checkpoint = checkpoint
        self.commit_every_s = commit_every_s
        self._last_commit = time.monotonic()
        self.producer = producer
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.max_records = max_records
        self.stats = ConsumerStats()
        self._outage_s = 0.0
        self._config: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=f"{service}-consumer",
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            isolation_level="read_committed",
            # How long one batch may take before the group gives its partitions to another
            # member (a handler may wait out an outage of its dependencies within a batch).
            max_poll_interval_ms=int(max_poll_interval_s * 1000),
        )
        self._consumer: AIOKafkaConsumer
        self._pending: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()
        self._started = False
        self._hist = HANDLER_SECONDS.labels(service, "consume")
        self._per_event = BatchedObservations(self._hist)  # the per-event path's, flushed at commits
        self._routes: dict[str, _Route] = {}
        self._batch_span_name = f"{service} process"
        self._batch_span_attrs: dict[str, Any] = {"messaging.system": "kafka", "msp.service": service}
        self._lag_at = 0.0  # when the lag gauges were last brought up to date (monotonic)
        self._joined = False

    @property
    def assigned(self) -> bool:
        return self._started and bool(self._consumer.assignment())

    @property
    def joined(self) -> bool:
        """Started and a member of its group since its first rebalance, whether or not it holds
        partitions now: a rebalance, or more replicas than partitions, does not make it false."""
        return self._started and self._joined

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(**self._config)
        await self._consumer.start()
        self._consumer.subscribe(
            [physical(t, self.namespace) for t in self.topics], listener=_CommitOnRevoke(self)
        )
        self._started = True

    def request_stop(self) -> None:
        """Finish the event in hand, commit, and leave the loop."""
        self._stopping.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    await self._round()
                except _ClientFailed as exc:
                    await self._reconnect(exc)
        except StateLost:
            self._pending = {}  # never commit past the last checkpoint
            raise
        finally:
            await self._commit_pending()

    async def _round(self) -> None:
        """One poll: handle what it brought, commit as due, report the lag."""
        batch = await self._poll(250, self.max_records)
        if self.batch_handler is not None:
            batch = await self._linger(batch)
            if batch and not self._stopping.is_set():
                await self._process_batch([r for records in batch.values() for r in records])
                for tp, records in batch.items():
                    self._pending[tp] = records[-1].offset + 1
            if time.monotonic() - self._last_commit >= self.commit_every_s:
                await self._commit_pending()
            await self._report_lag()
            return
        recorded: list[SpanContext] = []  # the batch's events whose traces are recorded
        started = time.time_ns()
        if self.lanes > 1:
            await self._process_in_lanes(batch, recorded)
        else:
            for tp, records in batch.items():
                route = self._routes.get(tp.topic) or self._route(tp.topic)
                # The events of one publish share a trace context: entered once per run.
                for run in trace_runs(records):
                    with consumer_context(route.span_name, run[0].headers, route.span_attrs, recorded):
                        for record in run:
                            if self._stopping.is_set():
                                break
                            await self._handle(record, route)
                            self._pending[tp] = record.offset + 1
        batch_span(self._batch_span_name, recorded, self._batch_span_attrs, started)
        await self._commit_pending()
        await self._report_lag()

    async def _poll(
        self, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        try:
            got: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=max_records
            )
            return got
        except asyncio.CancelledError:
            if _cancelled_from_outside():
                raise
            # The client's group coordination ended with a cancellation of its own (aiokafka
            # 0.14 does, when it stops its heartbeat while that is leaving the group, as after
            # a session lost to a broker restart): every later poll would fail the same way.
            raise _ClientFailed("the Kafka client's group coordination ended") from None

    async def _reconnect(self, exc: BaseException) -> None:
        """Replace a client that no longer takes part in its group. Its partitions are treated
        as revoked (the handler checkpoints and forgets what may now be another member's), and
        what was handled since the last commit is delivered again, as after a crash: the
        failed client cannot commit it."""
        self.stats.reconnects += 1
        log.error("the Kafka client left its group for good; starting a new one", extra={"error": str(exc)})
        self._pending = {}
        old = self._consumer
        self._forget_lag(old.assignment())
        if self.on_revoke is not None:
            if self.checkpoint is not None:
                await self.checkpoint()
            await self.on_revoke()
        try:
            await old.stop()
        except asyncio.CancelledError:
            if _cancelled_from_outside():
                raise
        except Exception:  # noqa: BLE001 - the old client is dropped either way
            log.warning("the failed Kafka client did not stop cleanly", exc_info=True)
        self._joined = False
        await self.start()

    async def stop(self) -> None:
        self.request_stop()
        if self._started:
            self._started = False
            await self._consumer.stop()

    async def _report_lag(self) -> None:
        """Bring `msp_consumer_lag` up to date for the partitions this consumer holds, about
        once a second: the last stable offset (what read_committed can read; the high watermark
        before the first fetch says) minus the consumer's position, from what the fetches
        already told the client (no request of its own)."""
        now = time.monotonic()
        if now - self._lag_at < LAG_REPORT_S:
            return
        self._lag_at = now
        group = self._config["group_id"]
        for tp in self._consumer.assignment():
            end = self._consumer.last_stable_offset(tp)
            if end is None:
                end = self._consumer.highwater(tp)
            if end is None:
                continue  # nothing fetched from it yet
            try:
                position = await self._consumer.position(tp)
            except Exception:  # revoked meanwhile: the next assignment reports it
                continue
            route = self._routes.get(tp.topic) or self._route(tp.topic)
            CONSUMER_LAG.labels(group, route.topic, str(tp.partition)).set(max(0, end - position))

    def _forget_lag(self, revoked: Any) -> None:
        """A revoked partition's lag is its next owner's to report."""
        group = self._config["group_id"]
        for tp in revoked or ():
            route = self._routes.get(tp.topic) or self._route(tp.topic)
            try:
                CONSUMER_LAG.remove(group, route.topic, str(tp.partition))
            except KeyError:
                pass  # never reported

    async def _commit_pending(self) -> None:
        self._last_commit = time.monotonic()
        for route in self._routes.values():
            route.flush()
        self._per_event.flush()
        if not self._pending:
            return
        if self.checkpoint is not None:
            # The handler's state first, then the offsets: a crash in between replays records
            # onto state that already has them, which the handler recognises.
            await self.checkpoint()
        offsets, self._pending = self._pending, {}
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group moved on without us (a broker restart, a handler slower than the poll
            # interval): the partitions may be another member's now. What was handled since
            # the last commit is delivered again to whoever holds them, as after a crash; the
            # loop rejoins at its next poll instead of ending the process.
            self.stats.commits_refused += 1
            log.warning(
                "offsets not committed: the group rebalanced; the records since the last commit come again",
                extra={"error": str(exc)[:200], "partitions": len(offsets)},
            )

    async def _process(
        self, record: ConsumerRecord[bytes, bytes], recorded: list[SpanContext] | None = None
    ) -> None:
        """One record in its event's trace context (see `_handle`). `recorded` collects the
        span contexts of events whose traces are recorded, for one span per batch (see
        `consumer_context`)."""
        route = self._routes.get(record.topic) or self._route(record.topic)
        with consumer_context(route.span_name, record.headers, route.span_attrs, recorded):
            await self._handle(record, route)

    async def _handle(self, record: ConsumerRecord[bytes, bytes], route: _Route) -> None:
        """Decode, check and handle one record, retrying and dead-lettering as the class says,
        in the trace context the caller entered."""
        assert self.handler is not None
        start = time.perf_counter()
        try:
            event = route.decode(record.key, record.value, record.headers or ())
        except (ValidationError, TenantMismatch, ValueError) as exc:
            await self._deadletter(record, exc, reason="invalid")
            return
        handler = self.handler
        try:  # the common case, without the retry loop's frames
            await handler(event, record)
            self._outage_s = 0.0
            failure = None
        except (asyncio.CancelledError, StateLost):
            raise
        except Exception as exc:
            failure = await self._attempts(lambda: handler(event, record), self.max_attempts, exc)
        if failure is not None:
            log.error(
                "handler failed; dead-lettering",
                exc_info=failure,
                extra={"topic": record.topic, "offset": record.offset},
            )
            await self._deadletter(record, failure, reason="handler")
            return
        self.stats.handled += 1
        route.handled += 1  # counted into the metric at each commit (an increment takes a lock)
        self._per_event.observe(time.perf_counter() - start)

    def _route(self, physical_topic: str) -> _Route:
        """What the per-event path needs about a topic, worked out on its first record."""
        topic = logical(physical_topic, self.namespace)
        route = _Route(
            topic=topic,
            decode=decoder(topic),
            span_name=f"{physical_topic} process",
            span_attrs={
                "messaging.system": "kafka",
                "messaging.destination": physical_topic,
                "msp.service": self.service,
            },
            ok=EVENTS_CONSUMED.labels(self.service, topic, "ok"),
        )
        self._routes[physical_topic] = route
        return route

    async def _process_in_lanes(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        recorded: list[SpanContext] | None = None,
    ) -> None:
        """One poll's records in lanes by key (see the class docstring); what was handled is
        marked for commit per partition, up to its first record not handled (a stop request
        ends every lane after the record in hand)."""
        lanes: dict[bytes | None, list[ConsumerRecord[bytes, bytes]]] = {}
        for records in batch.values():
            for record in records:
                lanes.setdefault(record.key, []).append(record)
        done: set[tuple[str, int, int]] = set()
        slots = asyncio.Semaphore(self.lanes)
        failed = asyncio.Event()

        async def lane(records: list[ConsumerRecord[bytes, bytes]]) -> None:
            async with slots:
                for record in records:
                    if self._stopping.is_set() or failed.is_set():
                        return
                    try:
                        await self._process(record, recorded)
                    except BaseException:
                        failed.set()  # the other lanes stop after the record in hand
                        raise
                    done.add((record.topic, record.partition, record.offset))

        try:
            # What escapes `_process` (the loop being cancelled, lost state, a dead letter that
            # could not be written) ends the loop as it does without lanes, once every lane has
            # put down the record in hand.
            outcomes = await asyncio.gather(*(lane(r) for r in lanes.values()), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        finally:
            for tp, records in batch.items():
                for record in records:
                    if (record.topic, record.partition, record.offset) not in done:
                        break
                    self._pending[tp] = record.offset + 1

    async def _linger(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """Batch mode: a poll that came back short waits up to `batch_linger_s` for more, so a
        steady stream is handled in large batches (one state write and one publish each)
        rather than in as many small ones as the fetcher happens to return."""
        if not batch or self.batch_linger_s <= 0:
            return batch
        count = sum(len(r) for r in batch.values())
        deadline = time.monotonic() + self.batch_linger_s
        while count < self.max_records and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = await self._poll(int(left * 1000), self.max_records - count)
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
                count += len(records)
        return batch

    async def _process_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        assert self.batch_handler is not None
        start = time.perf_counter()
        decoded: list[tuple[Any, ConsumerRecord[bytes, bytes]]] = []
        for record in records:
            try:
                route = self._routes.get(record.topic) or self._route(record.topic)
                event = route.decode(record.key, record.value, record.headers or ())
            except (ValidationError, TenantMismatch, ValueError) as exc:
                await self._deadletter(record, exc, reason="invalid")
                continue
            decoded.append((event, record))
        if not decoded:
            return
        first = decoded[0][1]
        with span_from_headers(
            f"{first.topic} process batch",
            list(first.headers or ()),
            **{
                "messaging.system": "kafka",
                "messaging.batch.message_count": len(decoded),
                "msp.service": self.service,
            },
        ):
            handled = decoded
            batch_handler = self.batch_handler
            failure = await self._attempts(lambda: batch_handler(decoded), self.max_attempts)
            if failure is not None:
                # Isolate the poison: one event at a time (once each), dead-lettering those that fail.
                log.error("batch handler failed; retrying events one by one", exc_info=failure)
                handled = []
                for item in decoded:
                    failed = await self._attempts(functools.partial(batch_handler, [item]), 1)
                    if failed is None:
                        handled.append(item)
                    else:
                        await self._deadletter(item[1], failed, reason="handler")
        self.stats.handled += len(handled)
        for topic, n in Counter(record.topic for _, record in handled).items():
            route = self._routes[topic]
            route.handled += n
            route.flush()  # once per topic and batch: no need to wait for the commit
        self._hist.observe(time.perf_counter() - start)

    async def _attempts(
        self, call: Callable[[], Awaitable[None]], attempts: int, failed: Exception | None = None
    ) -> Exception | None:
        """The one retry loop of both handler paths: `call` until it succeeds (None) or has
        failed `attempts` times (its last exception, for the dead letter), backing off between
        attempts. A dependency that is down is waited out and not counted as an attempt;
        cancellation and lost state are never retried. `failed` is the failure of a first
        attempt the caller already made."""
        attempt = 0
        while True:
            try:
                if failed is not None:
                    exc, failed = failed, None
                    raise exc
                await call()
                self._outage_s = 0.0
                return None
            except (asyncio.CancelledError, StateLost):
                raise
            except Exception as exc:  # the handler's failure is data for the dead letter
                if unavailable(exc):
                    await self._wait_out(exc)
                    continue
                attempt += 1
                if attempt >= attempts:
                    return exc
                await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))

    async def _wait_out(self, exc: BaseException) -> None:
        """A dependency is down (the database, the broker): not the event's fault, so it is
        neither counted as an attempt nor dead-lettered; the event waits, uncommitted, and is
        tried again once the dependency answers (backing off up to 5 s)."""
        self._outage_s = await wait_for_dependency(
            self.service, exc, max(self.retry_backoff_s, self._outage_s * 2), "the event"
        )

    async def _deadletter(
        self, record: ConsumerRecord[bytes, bytes], exc: BaseException, *, reason: str
    ) -> None:
        headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}
        letter = DeadLetter(
            service=self.service,
            error=str(exc)[:20000] or type(exc).__name__,
            error_type=type(exc).__name__,
            original_topic=record.topic,
            original_partition=record.partition,
            original_offset=record.offset,
            original_key=record.key.decode("utf-8", "replace") if record.key is not None else None,
            original_headers=headers,
            original_value=(record.value or b"").decode("utf-8", "replace"),
            tenant_id=headers.get(H_TENANT),
        )
        # If this publish fails the exception propagates: the offset is not committed and the
        # record comes back after a restart, so nothing is lost.
        await self.producer.send_raw(
            physical(DeadLetter.topic, self.namespace),
            letter.model_dump_json().encode(),
            key=record.key,
            headers=inject_headers(),
        )
        self.stats.deadlettered += 1
        self.stats.last_error = letter.error[:500]
        topic = logical(record.topic, self.namespace)
        DEADLETTERED.labels(self.service, topic, reason).inc()
        EVENTS_CONSUMED.labels(self.service, topic, "deadlettered").inc()
        log.warning(
            "event dead-lettered",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reason": reason,
                "error": letter.error[:500],
            },
        )


Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


class AtomicPublisher:
    """Publishes each caller's events all-or-nothing, in Kafka transactions with group commit.

    Concurrent callers are gathered into one transaction (every `linger_s`), so throughput does
    not pay one commit per request, while each caller still learns whether *its* events were
    committed. If the transaction fails or times out it is aborted (or the producer replaced,
    which fences and aborts it): read_committed consumers never see any of it, and every
    caller in it gets `PublishError`.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        linger_s: float = 0.002,
        timeout_s: float = 10.0,
        max_batch_records: int = 50000,
        namespace: str = "",
    ) -> None:
        self.namespace = namespace
        self._config = _reliable_producer(
            bootstrap_servers,
            client_id,
            transactional_id=f"{client_id}-{uuid.uuid4().hex}",
            # Callers are already gathered into one transaction; lingering again only adds delay.
            linger_ms=0,
            # A transaction that starts while the broker still writes the previous one's markers
            # is told to retry (CONCURRENT_TRANSACTIONS); the default 100 ms backoff would then
            # dominate the latency of every request.
            retry_backoff_ms=5,
            max_batch_size=512 * 1024,
            request_timeout_ms=int(timeout_s * 1000),
        )
        self.linger_s = linger_s
        self.timeout_s = timeout_s
        self.max_batch_records = max_batch_records
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[tuple[list[Record], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def started(self) -> bool:
        return self._producer is not None and not self._closing

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._run(), name="atomic-publisher")

    async def stop(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task  # drains what callers already handed over
        await self._disconnect()

    async def publish(self, events: Sequence[Envelope]) -> None:
        """Return once Kafka committed every one of `events`; raise `PublishError` otherwise."""
        if self._closing:
            raise PublishError("the publisher is shutting down")
        trace_headers = inject_headers()
        records = []
        for event in events:
            key, value, headers = encode(event, trace_headers)
            records.append((physical(event.topic, self.namespace), key, value, headers))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((records, fut))
        self._wake.set()
        await fut
        for topic in {r[0] for r in records}:
            EVENTS_PUBLISHED.labels(topic).inc(sum(1 for r in records if r[0] == topic))

    async def _connect(self) -> None:
        producer = AIOKafkaProducer(**self._config)
        try:
            await _bounded(producer.start(), self.timeout_s)
        except BaseException:
            await _quietly_stop(producer)
            raise
        self._producer = producer

    async def _disconnect(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer)

    def _take_batch(self) -> list[tuple[list[Record], asyncio.Future[None]]]:
        batch: list[tuple[list[Record], asyncio.Future[None]]] = []
        n = 0
        while self._pending and (not batch or n + len(self._pending[0][0]) <= self.max_batch_records):
            item = self._pending.pop(0)
            batch.append(item)
            n += len(item[0])
        return batch

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(self.linger_s)  # let concurrent callers join this transaction
            batch = self._take_batch()
            try:
                if self._producer is None:
                    await self._connect()
                await _bounded(self._commit(batch), self.timeout_s)
            except Exception as exc:
                log.error(
                    "transaction failed; callers get 503", extra={"error": repr(exc), "callers": len(batch)}
                )
                # A fresh producer with the same transactional id fences the old one, so
                # whatever it had sent is aborted for good.
                await self._disconnect()
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(PublishError(f"transaction not committed: {exc!r}", [exc]))
            else:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)

    async def _commit(self, batch: list[tuple[list[Record], asyncio.Future[None]]]) -> None:
        producer = self._producer
        assert producer is not None
        async with producer.transaction():
            futures = [
                await producer.send(topic, value, key=key, headers=headers)
                for records, _ in batch
                for topic, key, value, headers in records
            ]
            await asyncio.gather(*futures)


async def _bounded(coro: Awaitable[Any], timeout_s: float) -> Any:
    """Like `asyncio.wait_for`, but on timeout it does not wait for the cancelled work to unwind:
    aiokafka aborting a transaction against a dead broker can take forever to give up."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieve, never raise
        raise TimeoutError(f"no answer from Kafka within {timeout_s:.0f}s")
    return task.result()


async def _quietly_stop(producer: AIOKafkaProducer) -> None:
    try:
        await _bounded(producer.stop(), 5)
    except Exception as exc:  # the broker may be gone; the process must still move on
        log.warning("producer did not stop cleanly", extra={"error": repr(exc)})
