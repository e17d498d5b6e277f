"""Telemetry shared by every service: JSON logs, Prometheus metrics, W3C trace context on Kafka."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache, wraps
from typing import Any, ParamSpec, Protocol, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter, Gauge, Histogram

from libs.common.settings import SettingsError

_PROPAGATOR = TraceContextTextMapPropagator()
KafkaHeaders = Sequence[tuple[str, bytes]]


class _Consumed(Protocol):
    @property
    def headers(self) -> KafkaHeaders | None: ...


_R = TypeVar("_R", bound=_Consumed)

# --- logs -----------------------------------------------------------------------------------

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the active trace id, so logs join up with traces."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            doc["trace_id"] = format(span.trace_id, "032x")
            doc["span_id"] = format(span.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty at INFO about every rebalance step.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))


# --- tracing --------------------------------------------------------------------------------

_configured = False
DEFAULT_SAMPLE_RATIO = 0.1


def configure_tracing(service: str) -> None:
    """Install an SDK tracer provider so spans get real W3C ids, and export them where the
    standard `OTEL_*` variables say (see `span_exporter`); without an exporter the ids still
    travel in Kafka headers and logs.

    Sampling: unless `OTEL_TRACES_SAMPLER` says otherwise, one trace in ten is recorded
    (`parentbased_traceidratio`, 0.1: a consumer follows its producer's decision). An event in
    a trace that is not recorded is still handled under its trace id, so that id is in every
    log line and header; what it skips is the cost of recording.
    """
    global _configured
    if _configured:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    exporter = span_exporter(os.environ)
    sampler = (
        None
        if os.environ.get("OTEL_TRACES_SAMPLER")
        else ParentBased(TraceIdRatioBased(DEFAULT_SAMPLE_RATIO))
    )
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours names the service.
    provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=sampler)
    if exporter is not None:
        # Batches leave on a thread of their own (OTEL_BSP_* tune it); the provider flushes
        # what is queued when the process exits.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True


class TracingConfigError(SettingsError):
    """The OTEL_* variables ask for an exporter this platform does not ship (a start-up error,
    printed and exit 1, like any other bad setting)."""


def span_exporter(env: Mapping[str, str]) -> Any:
    """The span exporter the standard variables ask for, or None.

    Spans are exported over OTLP/HTTP (protobuf) when `OTEL_TRACES_EXPORTER` is `otlp`, or when
    it is unset and an OTLP endpoint is (`OTEL_EXPORTER_OTLP_ENDPOINT`, to which `/v1/traces`
    is appended, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as it is); the exporter reads
    its endpoint, headers, timeout and compression from those variables itself. `none`, or no
    variable at all, exports nothing: a platform without a collector does not retry
    connections to one. `console` prints spans as JSON to stdout. The gRPC protocol is refused
    with a clear error rather than ignored (this platform ships the HTTP exporter only).
    """
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not names:
        names = ["otlp"] if endpoint else []
    unknown = set(names) - {"otlp", "console", "none"}
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={env.get('OTEL_TRACES_EXPORTER')!r}: unknown exporter "
            f"{', '.join(sorted(unknown))} (this platform ships otlp, console and none)"
        )
    if "none" in names or not names:
        return None
    if len(names) > 1:
        raise TracingConfigError("OTEL_TRACES_EXPORTER: name one exporter (otlp, console or none)")
    if names == ["console"]:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "http/protobuf":
        raise TracingConfigError(
            f"OTLP protocol {protocol!r} is not supported: this platform exports over "
            "http/protobuf (a collector's port 4318); set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


_TRACERS: dict[str, trace.Tracer] = {}


def tracer(name: str = "msp") -> trace.Tracer:
    """The named tracer, looked up once (getting one builds it anew each time, which costs more
    than the span itself); before a provider is installed it is a proxy that follows it."""
    found = _TRACERS.get(name)
    if found is None:
        found = _TRACERS[name] = trace.get_tracer(name)
    return found


def inject_headers(headers: list[tuple[str, bytes]] | None = None) -> list[tuple[str, bytes]]:
    """Append the current W3C trace context (`traceparent`, `tracestate`) to Kafka headers."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    out = list(headers or [])
    out.extend((k, v.encode()) for k, v in carrier.items())
    return out


def context_from_headers(headers: KafkaHeaders | None) -> otel_context.Context:
    carrier = {k: v.decode("latin-1") for k, v in (headers or ()) if k in ("traceparent", "tracestate")}
    return _PROPAGATOR.extract(carrier)


def current_trace_id() -> str | None:
    span = trace.get_current_span().get_span_context()
    return format(span.trace_id, "032x") if span.is_valid else None


def _trace_headers(headers: KafkaHeaders | None) -> tuple[bytes | None, bytes | None]:
    """A record's `traceparent` and `tracestate` header values (None where absent)."""
    parent = state = None
    for key, value in headers or ():
        if key == "traceparent":
            parent = value
        elif key == "tracestate":
            state = value
    return parent, state


def _parse_parent(parent: bytes | None, state: bytes | None) -> trace.SpanContext | None:
    """The producer's span context from those header values, parsed directly: None when there
    is none or it is not a valid version-00 `traceparent`."""
    parts = parent.split(b"-") if parent is not None else ()
    if len(parts) != 4:
        return None
    version, trace_hex, span_hex, flags_hex = parts
    if version != b"00" or len(trace_hex) != 32 or len(span_hex) != 16 or len(flags_hex) != 2:
        return None
    try:
        trace_id, span_id, flags = int(trace_hex, 16), int(span_hex, 16), int(flags_hex, 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace.SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=trace.TraceFlags(flags),
        trace_state=trace.TraceState.from_header([state.decode("latin-1")]) if state else None,
    )


@lru_cache(maxsize=256)  # the events of one publish (a batch post, a consumed batch) share one
def _remote_context(
    parent: bytes | None, state: bytes | None
) -> tuple[otel_context.Context, trace.SpanContext] | None:
    """The context to handle an event in under its producer's span (see `consumer_context`),
    with that span's context; None when the event has no valid trace context."""
    span_context = _parse_parent(parent, state)
    if span_context is None:
        return None
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(span_context), otel_context.Context())
    return ctx, span_context


def trace_runs(records: Sequence[_R]) -> Iterator[list[_R]]:
    """A partition's records as runs of consecutive records that carry the same valid trace
    context (the events of one publish: a batch post, a consumed batch), to be handled in one
    `consumer_context` each, which is the context each of them gets on its own. A record
    without a valid trace context is a run of its own (it starts a trace of its own)."""
    run: list[_R] = []
    key: tuple[bytes | None, bytes | None] | None = None
    for record in records:
        this = _trace_headers(record.headers)
        if run and this == key:
            run.append(record)
            continue
        if run:
            yield run
        if _remote_context(*this) is None:
            yield [record]
            run, key = [], None
        else:
            run, key = [record], this
    if run:
        yield run


class consumer_context:  # noqa: N801 - used as a context manager, like contextlib's
    """The context one consumed event is handled in.

    An event is handled under its producer's span context itself, without a span of its own:
    its trace id (and the producer's sampling decision) is in every log line and in every
    header published while it is handled, and it skips the sampler, the id generator and the
    span object, which cost more than decoding the event. When its trace is recorded (the
    producer's sampled flag) and the caller gives a `recorded` list, the event's span context
    is appended to it, for one span per batch that links to them all (`batch_span`); without
    the list it gets a consumer span of its own, as `span_from_headers` makes. An event
    without a valid trace context starts a trace (sampled by the provider) in its own span.
    """

    __slots__ = ("name", "headers", "attrs", "recorded", "_span", "_token")

    def __init__(
        self,
        name: str,
        headers: KafkaHeaders | None,
        attrs: dict[str, Any],
        recorded: list[trace.SpanContext] | None = None,
    ) -> None:
        self.name, self.headers, self.attrs, self.recorded = name, headers, attrs, recorded
        self._span: Any = None
        self._token: Any = None

    def __enter__(self) -> None:
        remote = _remote_context(*_trace_headers(self.headers))
        if remote is not None and remote[1].trace_flags.sampled:
            if self.recorded is None:
                remote = None
            else:
                self.recorded.append(remote[1])
        if remote is None:
            self._span = span_from_headers(self.name, self.headers, **self.attrs)
            self._span.__enter__()
        else:
            self._token = otel_context.attach(remote[0])

    def __exit__(self, *exc: Any) -> None:
        if self._span is not None:
            self._span.__exit__(*exc)
        else:
            otel_context.detach(self._token)


MAX_LINKS = 128  # the SDK's default span link limit


def batch_span(
    name: str, recorded: Sequence[trace.SpanContext], attrs: dict[str, Any], start_ns: int
) -> None:
    """One recorded consumer span for the events of a batch whose traces are recorded: a
    child of the first one's producer span, linked to the others', from `start_ns` to now."""
    if not recorded:
        return
    first, *rest = recorded
    span = tracer().start_span(
        name,
        context=trace.set_span_in_context(trace.NonRecordingSpan(first), otel_context.Context()),
        kind=trace.SpanKind.CONSUMER,
        links=[trace.Link(c) for c in rest[:MAX_LINKS]],
        attributes={**attrs, "messaging.batch.message_count": len(recorded)},
        start_time=start_ns,
    )
    span.end()


@contextmanager
def span_from_headers(name: str, headers: KafkaHeaders | None, **attrs: Any) -> Iterator[trace.Span]:
    """A consumer span that continues the producer's trace."""
    ctx = context_from_headers(headers)
    with tracer().start_as_current_span(
        name, context=ctx, kind=trace.SpanKind.CONSUMER, attributes=attrs
    ) as span:
        yield span


# --- metrics --------------------------------------------------------------------------------


class BatchedObservations:
    """Observations of one labelled histogram child, added to it in bulk at `flush`: a bucket
    look-up per observation, and the child's locks once per bucket touched per flush instead
    of twice per observation. For a consumer's per-event path, flushed at each commit; use it
    from one thread."""

    __slots__ = ("_child", "_bounds", "_counts", "_sum", "_n")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds = list(child._upper_bounds)  # ends with +Inf, as observe() walks them
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._n = 0

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1  # the first bound >= amount
        self._sum += amount
        self._n += 1

    def flush(self) -> None:
        if not self._n:
            return
        counts = self._counts
        for i, n in enumerate(counts):
            if n:
                self._child._buckets[i].inc(n)
                counts[i] = 0
        self._child._sum.inc(self._sum)
        self._sum, self._n = 0.0, 0


HANDLER_SECONDS = Histogram(
    "msp_handler_seconds",
    "Time spent handling one event or request",
    ["service", "handler"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_CONSUMED = Counter(
    "msp_events_consumed_total", "Events handled by a consumer", ["service", "topic", "outcome"]
)
EVENTS_PUBLISHED = Counter("msp_events_published_total", "Events acknowledged by Kafka", ["topic"])
DEADLETTERED = Counter(
    "msp_deadlettered_total", "Events sent to the dead-letter topic", ["service", "topic", "reason"]
)
CONSUMER_LAG = Gauge(
    "msp_consumer_lag",
    "Events a consumer group has yet to read in one partition (its last stable offset minus "
    "its position), as the consumer last saw it",
    ["group", "topic", "partition"],
)
# The route is the template the request matched ("unmatched" for none): a bounded label.
HTTP_REQUESTS = Counter(
    "msp_http_requests_total", "HTTP requests answered", ["service", "route", "method", "code"]
)
HTTP_SECONDS = Histogram(
    "msp_http_request_seconds",
    "Time to answer an HTTP request",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

P = ParamSpec("P")
R = TypeVar("R")


def timed(service: str, handler: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Time an async handler into `msp_handler_seconds`."""
    hist = HANDLER_SECONDS.labels(service, handler)

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                hist.observe(time.perf_counter() - start)

        return wrapper

    return decorate
