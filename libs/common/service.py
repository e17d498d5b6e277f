"""The process shell every service runs in: settings, database, producer, consumers, HTTP.

A service builds a `Runtime`, adds its consumers and routes, and calls `serve()`. The runtime
serves `/healthz`, `/readyz` and `/metrics`, migrates the service's tables at start-up and, on
SIGTERM, lets the in-flight event finish, commits its offset and closes the clients.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, OperationalError

from libs.common import openapi
from libs.common.audit import AuditEmitter
from libs.common.bus import BatchHandler, EventConsumer, EventProducer, Handler
from libs.common.db import make_engine, migrate, pending_migrations, ping
from libs.common.events import TENANT_PATTERN
from libs.common.settings import ServiceSettings, SettingsError, load_settings
from libs.common.telemetry import (
    HTTP_REQUESTS,
    HTTP_SECONDS,
    configure_logging,
    configure_tracing,
    context_from_headers,
    tracer,
)

log = logging.getLogger(__name__)
# A tenant id in a query string, as every service's routes take it.
TenantQuery = Annotated[str, Query(pattern=TENANT_PATTERN)]


class ObserveRequests:
    """ASGI middleware: continue the caller's trace (W3C traceparent) or start one, so that
    everything the request publishes carries it onward in Kafka headers; and count and time
    each request by route template (`/v1/signals/{signal_id}`, never the raw path: bounded
    cardinality), method and status. Plain ASGI rather than `@app.middleware("http")`, which
    costs a task and a stream per request."""

    def __init__(self, app: Any, service: str) -> None:
        self.app = app
        self.service = service
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v) for k, v in scope.get("headers") or () if k in _TRACE_HEADERS]
        status = 500  # unless the application answers
        started = time.perf_counter()

        async def send_observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            name, parent = f"{scope['method']} {scope['path']}", context_from_headers(headers)
            with tracer().start_as_current_span(name, context=parent, kind=SpanKind.SERVER):
                await self.app(scope, receive, send_observed)
        finally:
            route = scope.get("route")
            self._observe(getattr(route, "path", "unmatched"), scope["method"], status, started)

    def _observe(self, route: str, method: str, status: int, started: float) -> None:
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                HTTP_REQUESTS.labels(self.service, route, method, str(status)),
                HTTP_SECONDS.labels(self.service, route, method),
            )
        series[0].inc()
        series[1].observe(time.perf_counter() - started)


_TRACE_HEADERS = (b"traceparent", b"tracestate")


class BodyLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with 413 before anyone parses it,
    whether the sender declared its length or streams it in chunks. The body is read here (the
    framework would buffer it anyway) and replayed to the application."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = b'{"detail":"request body larger than %d bytes"}' % self.max_bytes
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM after its graceful shutdown, so the process dies
    "killed by signal". SIGTERM is how supervisors ask a service to stop: once the shutdown is
    done, exit 0."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM and sig in self._captured_signals:
            self._captured_signals.remove(sig)


class Runtime:
    def __init__(self, settings: ServiceSettings, *, migrations_dir: Path | None) -> None:
        self.settings = settings
        self.service = settings.service_name
        self.migrations_dir = migrations_dir
        self.engine: Engine = make_engine(settings.effective_database_url)
        self.producer = EventProducer(
            settings.kafka_bootstrap_servers,
            client_id=f"msp-{self.service}",
            namespace=settings.topic_namespace,
        )
        self.audit = AuditEmitter(self.producer, self.service)
        self.consumers: list[EventConsumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._server: uvicorn.Server | None = None
        self._components: list[tuple[str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]] = []
        self.readiness: dict[str, Callable[[], bool]] = {}

    def add_component(
        self,
        name: str,
        start: Callable[[], Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
        ready: Callable[[], bool],
    ) -> None:
        """Something else the service runs (a publisher, a scheduler): started after the
        producer, stopped before it, and part of /readyz."""
        self._components.append((name, start, stop))
        self.readiness[name] = ready

    def add_consumer(
        self,
        topics: Sequence[str],
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        on_revoke: Callable[[], Awaitable[None]] | None = None,
        group_id: str | None = None,
        max_records: int = 500,
        checkpoint: Callable[[], Awaitable[None]] | None = None,
        commit_every_s: float = 0.0,
        lanes: int = 1,
    ) -> EventConsumer:
        consumer = EventConsumer(
            service=self.service,
            topics=topics,
            group_id=group_id or self.settings.effective_consumer_group,
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            handler=handler,
            batch_handler=batch_handler,
            on_revoke=on_revoke,
            max_records=max_records,
            checkpoint=checkpoint,
            commit_every_s=commit_every_s,
            producer=self.producer,
            namespace=self.settings.topic_namespace,
            lanes=lanes,
        )
        self.consumers.append(consumer)
        return consumer

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.migrations_dir is not None:
            url = self.settings.effective_database_url
            if self.settings.migrate_on_start:
                await asyncio.to_thread(migrate, url, self.migrations_dir, self.service)
            elif await asyncio.to_thread(pending_migrations, url, self.migrations_dir, self.service):
                raise SettingsError(
                    f"the {self.service} tables are not at their newest revision and "
                    "MSP_MIGRATE_ON_START is false: run the migrations first (`msp migrate`, or "
                    "the deployment's migration job)"
                )
        await self.producer.start()
        for _, start, _ in self._components:
            await start()
        for consumer in self.consumers:
            await consumer.start()
            task = asyncio.create_task(consumer.run(), name=f"{self.service}-consumer")
            task.add_done_callback(self._consumer_ended)
            self._tasks.append(task)
        log.info("service started", extra={"port": self.settings.http_port})

    async def stop(self) -> None:
        self._stopping = True
        for consumer in self.consumers:
            consumer.request_stop()
        # The loops finish the event in hand and commit before they return.
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=self.settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
        for consumer in self.consumers:
            await consumer.stop()
        for _, _, stop in reversed(self._components):
            await stop()
        await self.producer.stop()
        self.engine.dispose()
        log.info("service stopped")

    def _consumer_ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        # A consumer that ended while the service runs (failed, or cancelled by anything but
        # our stop) cannot make progress: exit so the supervisor restarts us, rather than
        # stay up and look healthy.
        failure = None if task.cancelled() else task.exception()
        log.error(
            "consumer loop ended; shutting down",
            exc_info=failure,
            extra={"how": "cancelled" if task.cancelled() else "failed" if failure else "returned"},
        )
        if self._server is not None:
            self._server.should_exit = True

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    # --- HTTP -----------------------------------------------------------------------------

    def make_app(self, title: str, description: str = "", *, body_limit: bool = False) -> FastAPI:
        # FastAPI's own OpenTelemetry layer would open a second server span (and metrics) per
        # request: ObserveRequests does what is needed, the W3C context and per-route metrics, for less.
        app = FastAPI(
            title=title,
            description=description,
            lifespan=self.lifespan,
            telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        )
        app.add_middleware(ObserveRequests, service=self.service)
        openapi.document(app, body_limit=body_limit)
        app.add_exception_handler(RequestValidationError, request_errors)  # type: ignore[arg-type]
        app.add_exception_handler(OperationalError, database_unavailable)  # type: ignore[arg-type]
        app.add_exception_handler(DataError, unstorable_value)  # type: ignore[arg-type]

        @app.get("/healthz", tags=["ops"])
        async def healthz() -> dict[str, str]:
            return {"status": "ok", "service": self.service}

        @app.get("/readyz", tags=["ops"], responses={503: {"description": "Not ready: a check failed"}})
        async def readyz() -> JSONResponse:
            checks = {
                "producer": self.producer.started,
                # Joined its group once, not "holds partitions now": readiness must not flip for
                # every replica at each rebalance, nor stay false for a replica without partitions.
                "consumers_joined": all(c.joined for c in self.consumers),
                "database": await asyncio.to_thread(ping, self.engine),
                **{name: check() for name, check in self.readiness.items()},
            }
            ok = all(checks.values())
            return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

        @app.get(
            "/metrics",
            tags=["ops"],
            response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        )
        async def metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        return app

    def serve(self, app: FastAPI) -> None:
        config = uvicorn.Config(
            app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(self.settings.shutdown_grace_s),
        )
        self._server = _Server(config)
        if not self.settings.http_reuse_port:
            self._server.run()
            return
        sock = socket.socket(socket.AF_INET6 if ":" in self.settings.http_host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.settings.http_host, self.settings.http_port))
        self._server.run(sockets=[sock])


_NOT_AN_OBJECT = {"model_attributes_type", "dict_type", "model_type"}


DATABASE_RETRY_AFTER_S = "5"


async def database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
    """The service's database cannot be reached (down, restarting, out of connections): 503
    with Retry-After, never a 500; the request's transaction, if any, was rolled back."""
    log.warning(
        "database unavailable for %s %s: %s", request.method, request.url.path, str(exc).splitlines()[0]
    )
    return JSONResponse(
        {"detail": "the service's database is unavailable; nothing of this request was stored, retry later"},
        status_code=503,
        headers={"Retry-After": DATABASE_RETRY_AFTER_S},
    )


async def unstorable_value(request: Request, exc: DataError) -> JSONResponse:
    """A value the database cannot hold (a NUL character in a query parameter, say): the
    request's fault, refused with 422; nothing was stored."""
    log.info("refused a value the database cannot store: %s", str(exc.orig).splitlines()[0])
    return JSONResponse(
        {"detail": f"a value of this request cannot be stored: {str(exc.orig).splitlines()[0]}"},
        status_code=422,
    )


async def request_errors(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI answers 422 for everything. A body that is not JSON, or not a JSON object, is
    the sender's framing, not a field: say so (400, or 415 for another content type); field
    errors stay 422, one entry per field."""
    errors = exc.errors()
    body_level = [e for e in errors if tuple(e.get("loc", ())) == ("body",)]
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body_level and ctype and not ctype.endswith("json"):
        return JSONResponse(
            {"detail": f"the body must be JSON, sent with Content-Type: application/json (got {ctype})"},
            status_code=415,
        )
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"detail": "malformed JSON body"}, status_code=400)
    if any(e.get("type") in _NOT_AN_OBJECT for e in body_level):
        return JSONResponse(
            {"detail": "the body must be a JSON object (several items go in the batch endpoints' lists)"},
            status_code=400,
        )
    if any(e.get("type") == "missing" for e in body_level):
        return JSONResponse({"detail": "a JSON object body is required"}, status_code=400)
    return JSONResponse(
        {
            "detail": [
                {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
            ]
        },
        status_code=422,
    )


def operator_only(settings: ServiceSettings) -> Any:
    """A FastAPI dependency: the platform operators' token (`Authorization: Bearer`), required
    on admin APIs and on read APIs where the tenant is a parameter rather than a credential."""
    token = settings.effective_admin_token().encode()

    @openapi.answers(401)
    async def check(authorization: Annotated[str | None, Header()] = None) -> None:
        presented = (
            authorization[7:].strip() if authorization and authorization.lower().startswith("bearer ") else ""
        )
        if not presented or not hmac.compare_digest(presented.encode(), token):
            raise HTTPException(401, "operator token required", headers={"WWW-Authenticate": "Bearer"})

    return Depends(check)


S = TypeVar("S", bound=ServiceSettings)


def run_service(settings_cls: type[S], build: Callable[[S], tuple[Runtime, FastAPI]]) -> None:
    """The whole `main()` of a service process: settings, logging, tracing, wiring, serve."""
    settings = load_settings(settings_cls)
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name)
    rt, app = build(settings)
    settle_heap()
    rt.serve(app)


def settle_heap() -> None:
    """Everything built so far lives as long as the process: keep the collector from walking
    it again and again, and collect less often. Full collections of a large heap are what
    otherwise shows up as tens of milliseconds in the p99 of requests. (Every service process
    calls this once wired; a benchmark of a service's parts calls it as the service would.)"""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 20)


def counts_router(settings: ServiceSettings, counted: Any) -> APIRouter:
    """`GET /v1/counts`: the events this service's consumers took in for one tenant, by topic
    (`counted` is the service's `inbox.Counted`)."""
    router = APIRouter()

    @router.get("/v1/counts", tags=["ops"], dependencies=[operator_only(settings)])
    async def counts(
        tenant_id: TenantQuery,
    ) -> dict[str, Any]:
        """Events this service has taken in for one tenant, by topic."""
        return {"tenant_id": tenant_id, "by_topic": await asyncio.to_thread(counted.counts, tenant_id)}

    return router
