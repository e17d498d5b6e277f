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
