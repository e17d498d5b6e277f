import time

import pytest
from opentelemetry import trace

from libs.common.bus import TenantMismatch, decode, encode
from libs.common.telemetry import configure_tracing, context_from_headers, tracer
from tests.samples import alert


def test_encode_keys_by_tenant_and_sets_headers() -> None:
    key, value, headers = encode(alert("acme"))
    h = dict(headers)
    assert key == b"acme"
    assert h["tenant_id"] == b"acme"
    assert h["event_type"] == b"alert.received.v1"
    assert h["schema_version"] == b"1"
    back = decode("alerts.raw.v1", key, value, headers)
    assert back.tenant_id == "acme"
    assert back.model_dump_json() == value.decode()


@pytest.mark.parametrize(
    "key,header",
    [(b"globex", b"acme"), (b"acme", b"globex"), (None, b"acme"), (b"acme", None)],
)
def test_tenant_disagreement_between_key_header_and_body_is_refused(key, header) -> None:  # type: ignore[no-untyped-def]
    _, value, headers = encode(alert("acme"))
    headers = [(k, v) for k, v in headers if k != "tenant_id"]
    if header is not None:
        headers.append(("tenant_id", header))
    with pytest.raises(TenantMismatch):
        decode("alerts.raw.v1", key, value, headers)


def test_trace_context_travels_in_headers() -> None:
    configure_tracing("test")
    with tracer().start_as_current_span("producer") as span:
        _, _, headers = encode(alert())
        sent_trace = span.get_span_context().trace_id
    assert any(k == "traceparent" for k, _ in headers)
    ctx = context_from_headers(headers)
    assert trace.get_current_span(ctx).get_span_context().trace_id == sent_trace


def test_a_trace_that_is_not_recorded_still_carries_its_ids_into_headers_and_logs() -> None:
    import logging

    from libs.common.telemetry import JsonFormatter, span_from_headers

    configure_tracing("test")
    # Ten traces in a hundred are recorded by default; the rest still get real ids.
    spans = []
    for _ in range(200):
        with tracer().start_as_current_span("producer") as span:
            _, _, headers = encode(alert())
            spans.append((span.is_recording(), span.get_span_context().trace_id, headers))
    recorded = sum(r for r, _, _ in spans)
    assert 0 < recorded < 100, recorded
    _, sent_trace, headers = next(s for s in spans if not s[0])
    with span_from_headers("consume", headers, **{"msp.service": "test"}) as consumer:
        assert not consumer.is_recording()  # the producer's decision is followed
        assert consumer.get_span_context().trace_id == sent_trace
        line = JsonFormatter("test").format(logging.makeLogRecord({"msg": "handled"}))
    assert f'"trace_id": "{sent_trace:032x}"' in line


def test_undeclared_topic_is_an_error() -> None:
    key, value, headers = encode(alert())
    with pytest.raises(KeyError, match="unknown topic"):
        decode("alerts.raw.v0", key, value, headers)


def _produced(recorded: bool) -> tuple[int, list[tuple[str, bytes]]]:
    """Headers of an event published inside a producer span whose trace is (not) recorded."""
    for _ in range(500):
        with tracer().start_as_current_span("producer") as span:
            _, _, headers = encode(alert())
            if span.is_recording() == recorded:
                return span.get_span_context().trace_id, headers
    raise AssertionError("the sampler never decided that way in 500 traces")


def _current() -> trace.SpanContext:
    return trace.get_current_span().get_span_context()


def test_an_unrecorded_event_is_handled_under_its_producers_trace_without_a_span() -> None:
    import logging

    from libs.common.telemetry import JsonFormatter, consumer_context

    configure_tracing("test")
    sent_trace, headers = _produced(recorded=False)
    with consumer_context("consume", headers, {}):
        assert _current().trace_id == sent_trace
        assert not trace.get_current_span().is_recording()
        line = JsonFormatter("test").format(logging.makeLogRecord({"msg": "handled"}))
        _, _, onward = encode(alert())  # what the handler publishes continues the trace
    assert f'"trace_id": "{sent_trace:032x}"' in line
    parent = dict(onward)["traceparent"].decode()
    assert parent.startswith(f"00-{sent_trace:032x}-")
    assert int(parent[-2:], 16) & 1 == 0  # still not sampled downstream
    assert not _current().is_valid  # the event's context ends with it


def test_a_recorded_event_gets_a_consumer_span_in_its_producers_trace() -> None:
    from libs.common.telemetry import consumer_context

    configure_tracing("test")
    sent_trace, headers = _produced(recorded=True)
    with consumer_context("consume", headers, {"msp.service": "test"}):
        span = trace.get_current_span()
        assert span.is_recording()
        assert span.get_span_context().trace_id == sent_trace
        assert span.parent is not None and span.parent.trace_id == sent_trace  # type: ignore[attr-defined]
    assert not _current().is_valid


@pytest.mark.parametrize(
    "traceparent",
    [
        None,
        b"garbage",
        b"01-" + b"a" * 32 + b"-" + b"b" * 16 + b"-00",
        b"00-" + b"0" * 32 + b"-" + b"b" * 16 + b"-00",
        b"00-" + b"g" * 32 + b"-" + b"b" * 16 + b"-00",
    ],
)
def test_an_event_without_a_valid_trace_context_starts_a_trace_of_its_own(traceparent: bytes | None) -> None:
    from libs.common.telemetry import consumer_context

    configure_tracing("test")
    headers = [("tenant", b"acme")] + ([("traceparent", traceparent)] if traceparent else [])
    with consumer_context("consume", headers, {}):
        started = _current()
        assert started.is_valid and not started.is_remote
    assert not _current().is_valid


def test_the_trace_state_travels_with_an_unrecorded_event() -> None:
    from libs.common.telemetry import consumer_context

    configure_tracing("test")
    headers = [("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-00"), ("tracestate", b"vendor=x1")]
    with consumer_context("consume", headers, {}):
        _, _, onward = encode(alert())
    assert dict(onward)["tracestate"] == b"vendor=x1"


def test_recorded_events_of_a_batch_share_one_span_that_links_to_each_of_them() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from libs.common.telemetry import batch_span, consumer_context

    configure_tracing("test")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    produced = [_produced(recorded=True) for _ in range(3)] + [_produced(recorded=False)]
    recorded: list[trace.SpanContext] = []
    started = time.time_ns()
    for sent_trace, headers in produced:
        with consumer_context("consume", headers, {}, recorded):
            assert _current().trace_id == sent_trace  # each event under its own trace
            assert not trace.get_current_span().is_recording()  # no span of its own
    assert [c.trace_id for c in recorded] == [t for t, _ in produced[:3]]
    exporter.clear()
    batch_span("svc process", recorded, {"msp.service": "test"}, started)
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == produced[0][0]  # in the first recorded event's trace
    assert [link.context.trace_id for link in span.links] == [t for t, _ in produced[1:3]]
    assert span.attributes["messaging.batch.message_count"] == 3
    assert span.start_time == started
    batch_span("svc process", [], {}, started)  # nothing recorded: no span
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, None),  # no collector named: nothing exported, nothing retried
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "OTLPSpanExporter"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, "OTLPSpanExporter"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "OTLPSpanExporter",
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, "ConsoleSpanExporter"),
    ],
)
def test_the_span_exporter_follows_the_standard_variables(env: dict[str, str], kind: str | None) -> None:
    from libs.common.telemetry import span_exporter

    exporter = span_exporter(env)
    assert (type(exporter).__name__ if exporter is not None else None) == kind


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "unknown exporter jaeger"),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "name one exporter"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "http/protobuf",
        ),
    ],
)
def test_an_exporter_the_platform_does_not_ship_stops_start_up_with_a_clear_error(
    env: dict[str, str], says: str
) -> None:
    from libs.common.telemetry import TracingConfigError, span_exporter

    with pytest.raises(TracingConfigError, match=says):
        span_exporter(env)
