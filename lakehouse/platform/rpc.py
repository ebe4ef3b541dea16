"""Request/reply over core NATS with errors that keep their HTTP meaning end to end.

A service handler that raises :class:`LakehouseError` replies with a ``Lakehouse-Status``
header and ``{"error", "detail"}``; :func:`call` turns that back into the same exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from collections.abc import Callable
from typing import TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from lakehouse.platform.errors import (
    BadRequest,
    LakehouseError,
    Permanent,
    Timeout,
    Unavailable,
)
from lakehouse.platform.refusals import refusal
from schemas.messages import PART_HEADER, STATUS_HEADER

log = logging.getLogger("lakehouse.rpc")


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: bytes) -> M:
    """A request body as ``model``; a validation failure is a 400 naming the bad fields."""
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise BadRequest(exc.errors(include_url=False, include_context=False)) from None


def error_reply(exc: BaseException) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an error reply. A :class:`LakehouseError` or :class:`Permanent`
    says what it means to the caller; any other exception is a bug whose text stays here: it
    is logged with an incident id, and the reply carries only that id."""
    if isinstance(exc, LakehouseError | Permanent):
        status, error, detail = exc.status, exc.error, exc.detail
    else:
        incident = uuid.uuid4().hex[:12]
        log.error("request handler failed", exc_info=exc, extra={"incident": incident})
        status, error = 500, "internal error"
        detail = f"unexpected error in the worker (incident {incident}; see the worker's log)"
    body = json.dumps({"error": error, "detail": detail}, default=str).encode()
    return body, {STATUS_HEADER: str(status)}


def raise_for_error(headers: dict[str, str] | None, data: bytes) -> None:
    status = (headers or {}).get(STATUS_HEADER)
    if not status:
        return
    try:
        body = json.loads(data)
    except ValueError:
        body = {"error": "internal error", "detail": data.decode(errors="replace")}
    exc = LakehouseError(body.get("detail"), error=body.get("error"))
    exc.status = int(status)
    raise exc


async def respond(nc: NATS, reply: str, body: bytes, headers: dict[str, str] | None = None) -> None:
    """Reply to ``reply`` in as many parts as ``max_payload`` requires."""
    size = max(1024, (nc.max_payload or 1 << 20) - 8192)
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    for i, part in enumerate(parts, 1):
        await nc.publish(reply, part, headers={**(headers or {}), PART_HEADER: f"{i}/{len(parts)}"})


class _Replies:
    """One wildcard reply subscription per connection (no SUB/UNSUB per request); each
    request gets its own token and queue."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self.queues: dict[str, asyncio.Queue[Msg]] = {}
        self.ready = asyncio.Lock()
        self.subscribed = False

    async def open(self) -> tuple[str, str, asyncio.Queue[Msg]]:
        if not self.subscribed:
            async with self.ready:
                if not self.subscribed:
                    await self.nc.subscribe(f"{self.prefix}.*", cb=self.deliver)
                    self.subscribed = True
        token = uuid.uuid4().hex
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self.queues[token] = queue
        return token, f"{self.prefix}.{token}", queue

    async def deliver(self, msg: Msg) -> None:
        queue = self.queues.get(msg.subject.rsplit(".", 1)[1])
        if queue is not None:
            queue.put_nowait(msg)


_replies: weakref.WeakKeyDictionary[NATS, _Replies] = weakref.WeakKeyDictionary()


def replies(nc: NATS) -> _Replies:
    mux = _replies.get(nc)
    if mux is None:
        mux = _replies[nc] = _Replies(nc)
    return mux


async def call(
    nc: NATS, subject: str, payload: BaseModel | bytes, *, timeout: float, what: str
) -> bytes:
    """Request ``subject`` and gather the (possibly multi-part) reply. Raises the replier's
    error, 503 when nobody serves the subject, 504 when no reply comes within ``timeout``
    (403 :class:`PermissionDenied` when that was the server refusing this user the subject
    or its reply inbox)."""
    data = payload if isinstance(payload, bytes) else payload.model_dump_json().encode()
    mux = replies(nc)
    token, inbox, queue = await mux.open()
    parts: dict[int, Msg] = {}
    try:
        async with asyncio.timeout(timeout):
            await nc.publish(subject, data, reply=inbox)
            while True:
                msg = await queue.get()
                headers = msg.headers or {}
                if headers.get("Status") == "503":
                    raise Unavailable(f"no {what} worker is running")
                i, _, n = headers.get(PART_HEADER, "1/1").partition("/")
                parts[int(i)] = msg
                if len(parts) == int(n):
                    break
    except TimeoutError:
        refused = refusal(nc, subject)
        if refused is not None:
            raise refused from None
        raise Timeout(f"the {what} worker did not answer within {timeout:g} s") from None
    finally:
        mux.queues.pop(token, None)
    body = b"".join(parts[i].data for i in sorted(parts))
    raise_for_error(parts[1].headers, body)
    return body


async def scatter(
    nc: NATS,
    subject: str,
    payload: BaseModel | bytes,
    *,
    timeout: float,
    done: Callable[[list[bytes]], bool],
    headers: dict[str, str] | None = None,
) -> list[bytes]:
    """Publish one request to every subscriber of ``subject`` and gather single-part replies
    until ``done(replies)`` or ``timeout`` (then return what arrived). A replier's error is
    raised (e.g. a 400 for a wrong query dimension)."""
    data = payload if isinstance(payload, bytes) else payload.model_dump_json().encode()
    mux = replies(nc)
    token, inbox, queue = await mux.open()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            await nc.publish(subject, data, reply=inbox, headers=headers)
            while not done(got):
                msg = await queue.get()
                headers = msg.headers or {}
                if headers.get("Status") == "503":
                    continue  # no responders at all: the deadline decides
                raise_for_error(headers, msg.data)
                got.append(msg.data)
    except TimeoutError:
        refused = None if got else refusal(nc, subject)
        if refused is not None:
            raise refused from None
        # otherwise what arrived in time is the answer
    finally:
        mux.queues.pop(token, None)
    return got
