"""What a service's OpenAPI document says it answers, kept true to what it does.

Clients are generated from these documents, so every status a route can answer is in its
`responses`, with the body it carries (`Problem`: `{"detail": ...}`). Three sources add them:
a route's own `responses=errors(...)` for what its handler refuses (404 for an unknown id, 409
for a state that forbids the change...); the route's dependencies, each of which declares what
it refuses (`answers(401, 403)` on an authentication dependency); and the service's own
machinery, which is the same for every route: a JSON body that is malformed or of another
content type (400, 415), a body over the size limit (413, where the service limits it), field
errors (422) and a database that cannot be reached (503). A method a path does not take is
answered 405 with an `Allow` header naming every method the path does take, and a path or
query string with a NUL character 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from libs.common.jsontypes import NO_NUL

REASONS = {
    400: "The body is not JSON, not a JSON object, or breaks a rule the fields' types cannot say",
    401: "No valid credential (operator token, engineer key, or signed link)",
    403: "The credential is valid but may not do this (another tenant, or a role without the right)",
    404: "No such resource for this tenant",
    409: "The resource is in a state that does not allow this (or changed meanwhile)",
    413: "The body is larger than the service takes",
    415: "The body is not sent as application/json",
    422: "A field is missing or invalid (one entry per field), or the request contradicts itself",
    429: "The tenant's rate limit is exceeded (see Retry-After)",
    503: "The database or the event bus cannot be reached; nothing was stored (see Retry-After)",
}
OPS = {"/healthz", "/readyz", "/metrics"}


class Problem(BaseModel):
    """The body of every refusal: a sentence, one entry per invalid field, or an object with a
    message and its problems."""

    detail: str | list[dict[str, Any]] | dict[str, Any]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the refusals its handler itself makes."""
    return {code: {"description": REASONS[code], "model": Problem} for code in codes}


F = TypeVar("F", bound=Callable[..., Any])


def answers(*codes: int) -> Callable[[F], F]:
    """Mark a dependency with the refusals it makes; every route that depends on it documents them."""

    def mark(fn: F) -> F:
        fn.openapi_answers = tuple(codes)  # type: ignore[attr-defined]
        return fn

    return mark


def _dependency_answers(dependant: Dependant) -> set[int]:
    found: set[int] = set(getattr(dependant.call, "openapi_answers", ()))
    for sub in dependant.dependencies:
        found |= _dependency_answers(sub)
    return found


def _problem_ref() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def document(app: FastAPI, *, body_limit: bool = False) -> None:
    """Make `app.openapi()` list every answer of every route (see the module's docstring), and
    answer 405 with the full `Allow`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        # What the dependencies of the app's own routes refuse (routes of an included router
        # declare theirs on the router: `APIRouter(responses=errors(...))`).
        declared: dict[tuple[str, str], set[int]] = {}
        for route in flat_routes(app.routes):
            if isinstance(route, APIRoute):
                for method in route.methods or ():
                    declared[(route.path_format, method.lower())] = _dependency_answers(route.dependant)
        for path, item in schema.get("paths", {}).items():
            if path in OPS:
                continue
            for method, operation in item.items():
                codes = declared.get((path, method), set()) | {503}
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") in ("query", "path"):
                        codes.add(400)  # a NUL character (RefuseNul)
                        _no_nul(parameter.get("schema", {}))
                if "requestBody" in operation:
                    codes.add(400)  # malformed JSON, not an object
                    codes |= {400, 415, 422} | ({413} if body_limit else set())
                responses = operation.setdefault("responses", {})
                for code in sorted(codes):
                    responses.setdefault(str(code), {"description": REASONS[code]})
                for code, response in responses.items():
                    if code.isdigit() and int(code) in REASONS:
                        # Every refusal is a Problem in JSON, whatever the route's success is
                        # (an HTML page's 404 included); a handler's own 422 with a sentence
                        # is one too.
                        response["content"] = _problem_ref()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(RefuseNul)
    app.add_exception_handler(StarletteHTTPException, _with_full_allow(app))  # type: ignore[arg-type]


def _no_nul(schema: dict[str, Any]) -> None:
    """A free-text parameter says it takes no NUL character (RefuseNul refuses one)."""
    for option in [schema, *schema.get("anyOf", [])]:
        if option.get("type") == "string" and "pattern" not in option and "format" not in option:
            option["pattern"] = NO_NUL


class RefuseNul:
    """ASGI middleware: a NUL character in the path or the query string is refused with 400
    before any route sees it (no database column can store one, no identifier holds one). In
    bodies, the text fields that are stored say so themselves (`NO_NUL` patterns)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            return await _refuse_nul(send, "a path or query parameter")
        await self.app(scope, receive, send)


async def _refuse_nul(send: Any, where: str) -> None:
    body = json.dumps({"detail": f"a NUL character is not accepted in {where}"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_full_allow(app: FastAPI) -> Callable[[Request, StarletteHTTPException], Any]:
    async def handler(request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code != 405:
            return await http_exception_handler(request, exc)
        allowed = _methods_of(flat_routes(app.routes), request.scope)
        return JSONResponse(
            {"detail": f"{request.method} is not allowed here; allowed: {', '.join(allowed)}"},
            status_code=405,
            headers={"Allow": ", ".join(allowed)},
        )

    return handler


def flat_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes of an app with those of its included routers in place (FastAPI keeps an
    included router as one entry; the services include theirs without a prefix, so each
    route's own path is its path in the app)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes)
        else:
            yield route


def _methods_of(routes: Iterable[Any], scope: Any) -> list[str]:
    """Every method some route takes on this path (the router itself names only the first route
    that matched the path)."""
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods) - {"HEAD"}
    return sorted(methods)
