"""Permission violations on NATS, for the request that timed out because of one.

nats-py reports a publish or subscription the server refused only through the connection's
error callback (the request itself just times out). :func:`remember` (called by the bus's
error callback) keeps the last few per connection; :func:`refusal` turns a timeout on a
refused subject into :class:`PermissionDenied` (``rpc.call``/``scatter``, :func:`checked`).
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

from nats.aio.client import Client as NATS

from lakehouse.platform.errors import PermissionDenied

T = TypeVar("T")

_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"', re.I)
_REFUSED_KEPT = 64
# Violations per connection, oldest first: nats-py reports them from the connection's
# reading task, which is how remember() (given only the error) knows whose they are.
_refused: weakref.WeakKeyDictionary[asyncio.Task[Any], dict[tuple[str, str], None]] = (
    weakref.WeakKeyDictionary()
)


def violation(exc: BaseException | None) -> tuple[str, str] | None:
    """``(operation, subject)`` of a permissions violation the server reported (operation
    ``publish`` or ``subscription``; the subject lowercased, as nats-py passes it on), else
    None."""
    found = _VIOLATION.search(str(exc)) if exc is not None else None
    return (found[1].lower(), found[2].lower()) if found else None


def denied(nc: NATS, subject: str) -> str | None:
    """Why a request on ``subject`` timed out when the server refused it: a violation for a
    publish to ``subject``, or for a subscription under ``nc``'s reply prefix (the request's
    reply inbox); None for a plain timeout. Looked up in the violations ``nc`` got (the last
    few, several requests may be refused at once) and in ``nc.last_error``. Permissions do
    not change while connected: an earlier refusal of the subject explains this one too."""
    subject = subject.lower()
    own_replies = nc._inbox_prefix.decode().lower() + "."
    reader = nc._reading_task
    seen = [*(_refused.get(reader, ()) if reader is not None else ())]
    last = violation(nc.last_error)
    if last is not None:
        seen.append(last)
    for operation, what in seen:
        if (operation == "publish" and what == subject) or (
            operation == "subscription" and what.startswith(own_replies)
        ):
            user = nc.options.get("user") or "(none)"
            verb = "publish to" if operation == "publish" else "subscribe to"
            return f"NATS user {user!r} may not {verb} {what!r} (the server refused it)"
    return None


def refusal(nc: NATS, subject: str) -> PermissionDenied | None:
    """The error for a request on ``subject`` that timed out because the server refused it
    (:func:`denied`), else None: a plain timeout."""
    why = denied(nc, subject)
    return PermissionDenied(why) if why is not None else None


async def checked(nc: NATS, subject: str, request: Awaitable[T]) -> T:
    """Await ``request`` (a request or JetStream call on ``subject``); when it times out
    because the server refused the subject, :class:`PermissionDenied` instead."""
    try:
        return await request
    except TimeoutError:
        refused = refusal(nc, subject)
        if refused is None:
            raise
        raise refused from None


def remember(exc: BaseException) -> tuple[str, str] | None:
    """Keep a violation the server reported (for :func:`denied`) and return its
    ``(operation, subject)``; None for any other error. The connection stays up and the
    refused request ends as a timeout; the subject is all the server says (never a
    credential)."""
    found = violation(exc)
    reader = asyncio.current_task()
    if found is not None and reader is not None:
        kept = _refused.setdefault(reader, {})
        kept.pop(found, None)
        kept[found] = None
        while len(kept) > _REFUSED_KEPT:
            del kept[next(iter(kept))]
    return found
