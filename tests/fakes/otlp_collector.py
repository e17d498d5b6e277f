"""An OTLP/HTTP trace receiver on loopback, for tests: it decodes what the services export
(`ExportTraceServiceRequest`, protobuf, optionally gzip) and keeps each span's trace id, span
id, parent, links and service name, as a collector would before handing them on."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from cli.processes import free_port


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    linked_trace_ids: tuple[str, ...]


class Collector:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.url = ""  # the base URL, for OTEL_EXPORTER_OTLP_ENDPOINT
        self._lock = threading.Lock()

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received = []
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            linked_trace_ids=tuple(link.trace_id.hex() for link in span.links),
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(received)

    def in_trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans of one trace, and the spans that link to it (a batch consumer's span is a
        child of one event's trace and links to the others')."""
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id or trace_id in s.linked_trace_ids]


@contextmanager
def otlp_collector() -> Iterator[Collector]:
    """A running receiver (its `url` for `OTEL_EXPORTER_OTLP_ENDPOINT`)."""
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            try:
                collector.receive(body)
            except Exception:  # a body that is not an export request
                self.send_error(400)
                return
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        collector.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield collector
    finally:
        server.shutdown()
        server.server_close()
