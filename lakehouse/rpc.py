"""Request/reply over core NATS with errors that keep their HTTP meaning end to end.

A service handler that raises :class:`LakehouseError` replies with a ``Lakehouse-Status``
header and ``{"error", "detail"}``; :func:`call` turns that back into the same exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from lakehouse.errors import BadRequest, LakehouseError, Permanent, Timeout, Unavailable

log = logging.getLogger("lakehouse.rpc")

STATUS_HEADER = "Lakehouse-Status"
PART_HEADER = "Lakehouse-Part"  # "i/n": replies larger than max_payload come in parts


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: bytes) -> M:
    """A request body as ``model``; a validation failure is a 400 naming the bad fields."""
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise BadRequest(exc.errors(include_url=False, include_context=False)) from None


def error_reply(exc: BaseException) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an error reply."""
    if isinstance(exc, LakehouseError | Permanent):
        status, error, detail = exc.status, exc.error, exc.detail
    else:
        log.error("request handler failed", exc_info=exc)
        status, error, detail = 500, "internal error", f"{type(exc).__name__}: {exc}"
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


async def call(
    nc: NATS, subject: str, payload: BaseModel | bytes, *, timeout: float, what: str
) -> bytes:
    """Request ``subject`` and gather the (possibly multi-part) reply. Raises the replier's
    error, 503 when nobody serves the subject, 504 when no reply comes within ``timeout``."""
    data = payload if isinstance(payload, bytes) else payload.model_dump_json().encode()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    parts: dict[int, Msg] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await nc.publish(subject, data, reply=inbox)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise nats.errors.TimeoutError
            msg = await sub.next_msg(timeout=left)
            headers = msg.headers or {}
            if headers.get("Status") == "503":
                raise Unavailable(f"no {what} worker is running")
            i, _, n = headers.get(PART_HEADER, "1/1").partition("/")
            parts[int(i)] = msg
            if len(parts) == int(n):
                break
    except (nats.errors.TimeoutError, TimeoutError):
        raise Timeout(f"the {what} worker did not answer within {timeout:g} s") from None
    finally:
        await sub.unsubscribe()
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
) -> list[bytes]:
    """Publish one request to every subscriber of ``subject`` and gather single-part replies
    until ``done(replies)`` or ``timeout`` (then return what arrived). A replier's error is
    raised (e.g. a 400 for a wrong query dimension)."""
    data = payload if isinstance(payload, bytes) else payload.model_dump_json().encode()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await nc.publish(subject, data, reply=inbox)
        while not done(replies):
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=left)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            headers = msg.headers or {}
            if headers.get("Status") == "503":
                continue  # no responders at all: the deadline decides
            raise_for_error(headers, msg.data)
            replies.append(msg.data)
    finally:
        await sub.unsubscribe()
    return replies
