"""Every service's HTTP layer counts and times requests by route template, method and status."""

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from libs.common.service import ObserveRequests


def _app(service: str) -> FastAPI:
    app = FastAPI()
    app.add_middleware(ObserveRequests, service=service)

    @app.get("/v1/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"thing_id": thing_id}

    @app.post("/v1/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    return app


def _count(service: str, route: str, method: str, code: str) -> float:
    labels = {"service": service, "route": route, "method": method, "code": code}
    return REGISTRY.get_sample_value("msp_http_requests_total", labels) or 0.0


async def test_requests_are_counted_by_route_template_not_by_raw_path() -> None:
    service = "metrics-test-a"
    transport = httpx.ASGITransport(app=_app(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        for thing in (1, 2, 3):
            assert (await client.get(f"/v1/things/{thing}")).status_code == 200
        assert (await client.get("/v1/things/not-a-number")).status_code == 422
        assert (await client.get("/no/such/route/123")).status_code == 404
        assert (await client.post("/v1/broken")).status_code == 500
    assert _count(service, "/v1/things/{thing_id}", "GET", "200") == 3
    assert _count(service, "/v1/things/{thing_id}", "GET", "422") == 1
    assert _count(service, "unmatched", "GET", "404") == 1
    assert _count(service, "/v1/broken", "POST", "500") == 1
    # One series per template: the three ids did not make three.
    routes = {
        s.labels["route"]
        for metric in REGISTRY.collect()
        if metric.name == "msp_http_requests"
        for s in metric.samples
        if s.labels.get("service") == service
    }
    assert routes == {"/v1/things/{thing_id}", "unmatched", "/v1/broken"}
    timed = {"service": service, "route": "/v1/things/{thing_id}", "method": "GET"}
    assert REGISTRY.get_sample_value("msp_http_request_seconds_count", timed) == 4


async def test_a_request_continues_the_callers_trace() -> None:
    from opentelemetry import trace

    from libs.common.telemetry import configure_tracing

    configure_tracing("metrics-test")
    seen: list[str] = []
    app = FastAPI()
    app.add_middleware(ObserveRequests, service="metrics-test-b")

    @app.get("/v1/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        seen.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))
        return {"thing_id": thing_id}

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        r = await client.get("/v1/things/7", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert r.status_code == 200 and seen == [trace_id]


def test_observations_added_in_bulk_give_the_histogram_observing_each_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from libs.common.telemetry import BatchedObservations

    registry = CollectorRegistry()
    buckets = (0.001, 0.01, 0.1, 1.0)
    direct = Histogram("direct_seconds", "each", ["k"], buckets=buckets, registry=registry)
    bulk = Histogram("bulk_seconds", "in bulk", ["k"], buckets=buckets, registry=registry)
    values = [0.0, 0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 0.01, 7.5]
    batched = BatchedObservations(bulk.labels("x"))
    for v in values[:5]:
        direct.labels("x").observe(v)
        batched.observe(v)
    batched.flush()
    for v in values[5:]:
        direct.labels("x").observe(v)
        batched.observe(v)

    def samples(name: str) -> dict[str, float]:
        return {
            s.name.removeprefix(name) + str(s.labels.get("le", "")): s.value
            for metric in registry.collect()
            if metric.name == name
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    assert samples("bulk_seconds")["_count"] == 5, "nothing is added before a flush"
    batched.flush()
    assert samples("bulk_seconds") == samples("direct_seconds")
    batched.flush()  # nothing new: changes nothing
    assert samples("bulk_seconds") == samples("direct_seconds")
