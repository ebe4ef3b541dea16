"""What one request may ask for (the ``limits`` settings), and the one message a limit hit
carries: ``<what> <value> is over the limit <limit> (<setting>)``, a 4xx in the gateway's
error shape with ``error`` = ``"limit exceeded"``, never a 5xx.

Where each limit is checked:

- ``limits.max_json_bytes`` (413): here, :class:`JsonBodyLimit`, around the whole app, before
  a route reads a byte: the declared ``Content-Length``, else a count as the body streams.
  The streamed uploads (:data:`UPLOADS`) are left to their own caps
  (:func:`gateway.uploads.refuse_oversize`).
- ``limits.max_k`` and ``limits.max_items_per_add`` (400): in their routes, first thing,
  with :func:`check` (the request schemas keep a fixed ceiling above the setting).
- ``limits.max_filter_ids`` (400): :func:`gateway.filters.id_cap`.
- ``limits.max_sql_result_bytes`` (413): the query worker, as it serialises the result.
- ``limits.requests_per_second``/``burst`` and ``limits.max_concurrent_queries`` (429, per
  key): :class:`KeyLimits`, applied by :mod:`gateway.auth` once it knows the caller.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import documented, error_response
from lakehouse.platform.config import Settings
from lakehouse.platform.errors import BadRequest, TooLarge, TooMany

LIMIT_JSON = "limits.max_json_bytes"

ERROR = "limit exceeded"
"""The ``error`` of every limit hit (the status says which kind: 400 or 413)."""

UPLOADS = (
    ("POST", re.compile(r"/v1/ingest")),
    ("POST", re.compile(r"/datasets/[^/]+/upload")),
    ("PUT", re.compile(r"/v1/storage/.+")),
)
"""The routes whose bodies stream (CSV, objects), capped by their own settings."""


def over(what: str, value: object, limit: int, setting: str) -> str:
    return f"{what} {value} is over the limit {limit} ({setting})"


def check(what: str, value: int, limit: int, setting: str, hint: str = "") -> None:
    """A 400 when ``value`` is over ``limit`` (the ``setting`` that says so)."""
    if value > limit:
        raise BadRequest(over(what, value, limit, setting) + hint, error=ERROR)


def too_large(what: str, value: object, limit: int, setting: str) -> TooLarge:
    return TooLarge(over(what, value, limit, setting), error=ERROR)


def streamed_upload(method: str, path: str) -> bool:
    return any(method == m and pattern.fullmatch(path) for m, pattern in UPLOADS)


class _Over(Exception):
    """Raised into the app by the counting ``receive``; the app's own answer is dropped."""


class JsonBodyLimit:
    """413 for a request body over ``max_bytes`` on every route but :data:`UPLOADS`. A
    declared ``Content-Length`` over it is refused before the app runs; a body without one
    is counted as the app reads it, and the app's answer to the cut-off read is replaced by
    the 413 (unless it had already started one)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def refusal(self, size: str) -> JSONResponse:
        out = error_response(too_large("JSON body of", size, self.max_bytes, LIMIT_JSON))
        # The rest of the body is not read: the connection cannot serve another request.
        out.headers["Connection"] = "close"
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or streamed_upload(scope["method"], get_route_path(scope)):
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:  # the server delivers no more than it declares
            if length.isdigit() and int(length) > self.max_bytes:
                await self.refusal(f"{int(length)} bytes")(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        seen, cut, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, cut
            if cut:
                raise _Over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    cut = True
                    raise _Over
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if cut and not started:
                return  # the app's error for the cut-off read: the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not cut:
                raise
        if cut and not started:
            await self.refusal(f"more than {self.max_bytes} bytes")(scope, receive, send)


@dataclass
class KeyLimits:
    """Per key, in this gateway: a token bucket of requests (``limits.requests_per_second``,
    ``limits.burst``) and a count of SQL/search requests in flight
    (``limits.max_concurrent_queries``); :mod:`gateway.auth` applies them to each caller."""

    rate: float
    burst: int
    max_queries: int
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> tokens, at
    running: dict[str, int] = field(default_factory=dict)

    def take(self, key_id: str) -> None:
        """One request of ``key_id``; 429 when its bucket is empty."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, at = self.buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1:
            wait = math.ceil((1 - tokens) / self.rate)
            raise TooMany(
                f"key {key_id} is over {self.rate:g} requests/s (limits.requests_per_second)",
                retry_after=max(1, wait),
            )
        self.buckets[key_id] = (tokens - 1, now)

    @contextmanager
    def query(self, key_id: str) -> Iterator[None]:
        """One query of ``key_id`` in flight while in the block; 429 when it has the most."""
        running = self.running.get(key_id, 0)
        if running >= self.max_queries:
            raise TooMany(
                f"key {key_id} has {running} queries in flight "
                f"(limits.max_concurrent_queries = {self.max_queries})"
            )
        self.running[key_id] = running + 1
        try:
            yield
        finally:
            left = self.running.get(key_id, 1) - 1
            if left:
                self.running[key_id] = left
            else:
                self.running.pop(key_id, None)


def _document(build: Callable[[], dict[str, Any]], max_bytes: int) -> Callable[[], dict[str, Any]]:
    """Every operation with a JSON body documents the 413 of :class:`JsonBodyLimit`."""
    said = f"The JSON body is over `{LIMIT_JSON}` ({max_bytes} bytes here)."

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by FastAPI: only its first call changes anything
        for ops in schema.get("paths", {}).values():
            for op in ops.values():
                if not isinstance(op, dict):
                    continue
                if "application/json" not in op.get("requestBody", {}).get("content", {}):
                    continue
                responses = op.setdefault("responses", {})
                entry = responses.setdefault("413", documented(413, said))
                if LIMIT_JSON not in entry["description"]:
                    entry["description"] = f"{entry['description']} {said}".strip()
        return schema

    return openapi


def install(app: FastAPI, settings: Settings) -> None:
    """:class:`JsonBodyLimit` around the app, and its 413 in the OpenAPI document."""
    max_bytes = settings.limits.max_json_bytes
    app.add_middleware(JsonBodyLimit, max_bytes=max_bytes)
    app.openapi = _document(app.openapi, max_bytes)  # type: ignore[method-assign]
