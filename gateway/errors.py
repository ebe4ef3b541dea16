"""The one error mapper: every error becomes ``{"error": ..., "detail": ...}``
(:class:`~schemas.messages.ErrorBody`), and the OpenAPI document says so.

- An invalid request (path, query or body against its schema) is **400** ``invalid request``
  with ``detail`` = ``[{"loc": [...], "msg": ...}]`` (FastAPI's own 422 is not used: a worker's
  validation error is a 400 too, so one status means "fix the request").
- A method the path does not serve is **405** with ``Allow`` listing every method it does serve.
- Every **503** carries ``Retry-After`` (seconds).
- A **500** never carries an exception's text: the detail names an incident id that the log
  line of the failure carries (workers do the same in :func:`lakehouse.platform.rpc.error_reply`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import get_route_path

from lakehouse.platform.errors import LakehouseError
from schemas.messages import ErrorBody

log = logging.getLogger("gateway.errors")

RETRY_AFTER = 5
"""Seconds a 503 asks the client to wait when the error names no other delay."""

DESCRIPTIONS = {
    401: "No API key, or one that matches no key (``WWW-Authenticate: Bearer``).",
    400: "Invalid request: a parameter or the body breaks its schema (``detail`` lists each "
    "`{loc, msg}`), or a rule the schema cannot state (named in ``detail``).",
    403: "Forbidden: the key's role or scopes do not allow this (``detail`` says what is "
    "needed), or what the route itself refuses.",
    404: "Not found.",
    409: "Conflict with the current state.",
    429: "A per-key limit: requests per second or queries in flight; retry after "
    "``Retry-After`` seconds.",
    413: "Body over the configured size limit; nothing was stored.",
    500: "Unexpected error; ``detail`` names the incident id of its log line.",
    503: "Unavailable (NATS unreachable, no worker of the kind running, or over capacity): "
    "retry after ``Retry-After`` seconds.",
    504: "No answer from the worker in time.",
}

RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}


def error_body(error: str, detail: Any = None) -> dict[str, Any]:
    return {"error": error, "detail": detail}


def documented(code: int, description: str | None = None) -> dict[str, Any]:
    """One error status in an OpenAPI document: its description, the one error shape,
    ``Retry-After`` where it has one."""
    entry: dict[str, Any] = {
        "description": description or DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    if code in (429, 503):
        entry["headers"] = RETRY_AFTER_HEADER
    return entry


def responses(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can return (500 always), each
    with the :class:`ErrorBody` shape; ``described`` overrides a description by status
    (``_409="..."``)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, 500}):
        entry: dict[str, Any] = {
            "model": ErrorBody,
            "description": described.get(f"_{code}", DESCRIPTIONS[code]),
        }
        if code in (429, 503):
            entry["headers"] = RETRY_AFTER_HEADER
        out[code] = entry
    return out


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path (Starlette's own 405 names only
    the methods of the first route whose path matched)."""
    path = get_route_path(request.scope)
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):  # included routers, flattened
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= route.methods or set()
    return sorted(methods)


def _incident(what: str) -> tuple[str, str]:
    incident = uuid.uuid4().hex[:12]
    return incident, f"unexpected error in the {what} (incident {incident}; see its log)"


def error_response(exc: LakehouseError) -> JSONResponse:
    """The answer for one of the core's errors, with the headers its status calls for."""
    headers = None
    if exc.status in (429, 503):
        headers = {"Retry-After": str(getattr(exc, "retry_after", RETRY_AFTER))}
    elif exc.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="lakehouse"'}
    return JSONResponse(error_body(exc.error, exc.detail), exc.status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(LakehouseError)
    async def lakehouse_error(request: Request, exc: LakehouseError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase.lower()
        detail = exc.detail
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            allow = allowed_methods(request)
            headers["Allow"] = ", ".join(allow)
            detail = f"method {request.method} not allowed on {request.url.path}; use {allow}"
        return JSONResponse(error_body(phrase, detail), exc.status_code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        return JSONResponse(error_body("invalid request", problems), 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident, detail = _incident("gateway")
        log.exception("unhandled error", extra={"path": request.url.path, "incident": incident})
        return JSONResponse(error_body("internal error", detail), 500)

    app.openapi = _without_422(app.openapi)  # type: ignore[method-assign]


def _without_422(build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """FastAPI documents a 422 on every route with parameters; validation errors are 400
    here (documented per route with :func:`responses`), so drop the 422s and their schemas."""

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by FastAPI: the removal below runs on the first call only
        for path in schema.get("paths", {}).values():
            for op in path.values():
                if isinstance(op, dict):
                    op.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        return schema

    return openapi
