"""The few exceptions that decide HTTP status codes and message ack decisions.

Workers raise :class:`RetryLater` (nak with backoff) or :class:`Permanent` (term + dead letter);
any other exception is treated as transient. The gateway maps every :class:`LakehouseError`
to ``{"error": ..., "detail": ...}`` with its ``status``.
"""

from __future__ import annotations

from typing import Any


class LakehouseError(Exception):
    status = 500
    error = "internal error"

    def __init__(self, detail: Any = None, *, error: str | None = None) -> None:
        self.detail = detail
        if error is not None:
            self.error = error
        super().__init__(f"{self.error}: {detail}" if detail is not None else self.error)


class BadRequest(LakehouseError):
    status = 400
    error = "bad request"


class Unauthorized(LakehouseError):
    """No credentials, or ones that match no key (the gateway adds ``WWW-Authenticate``)."""

    status = 401
    error = "unauthorized"


class Forbidden(LakehouseError):
    status = 403
    error = "forbidden"


class PermissionDenied(Forbidden):
    """The NATS server refused this process's user a publish or subscription (its
    permissions, ``lakehouse.platform.natsauth``); what nats-py reports as a timeout."""

    error = "nats permission denied"


class NotFound(LakehouseError):
    status = 404
    error = "not found"


class Conflict(LakehouseError):
    status = 409
    error = "conflict"


class TooLarge(LakehouseError):
    status = 413
    error = "payload too large"


class Busy(LakehouseError):
    """Temporarily over capacity; the client should retry after ``retry_after`` seconds."""

    status = 503
    error = "busy"

    def __init__(self, detail: Any = None, *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class TooMany(LakehouseError):
    """A per-key limit (request rate, queries in flight) is reached; retry after
    ``retry_after`` seconds."""

    status = 429
    error = "too many requests"

    def __init__(self, detail: Any = None, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(LakehouseError):
    status = 503
    error = "service unavailable"


class Timeout(LakehouseError):
    status = 504
    error = "timeout"


class RetryLater(Exception):
    """Transient failure: nak the message and redeliver after a backoff."""


class Permanent(Exception):
    """The message can never succeed: term it and dead-letter it with this reason.

    ``status``/``error`` say what the failure means to a client (e.g. 400 "invalid CSV")."""

    def __init__(self, detail: str, *, status: int = 400, error: str = "failed") -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.error = error
