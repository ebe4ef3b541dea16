"""NATS connection and JetStream provisioning from one declaration.

:data:`STREAMS` declares every stream the system uses; worker kinds declare their durable
consumers. :func:`provision` creates what is missing, updates what changed, and leaves the
rest untouched, so a second start changes nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from lakehouse.platform import backoff, refusals
from lakehouse.platform.config import Settings, redact_url
from lakehouse.platform.tlsctx import client_context
from schemas import subjects as S

log = logging.getLogger("lakehouse.bus")

DAY = 86400.0

STARTUP_DEADLINE = 60.0
"""Seconds a process keeps trying its first connect and its provisioning before it gives up."""

WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a publish whose expected last subject sequence is stale."""


class StaleSequence(Exception):
    """A publish expected the subject's last sequence to be one it no longer is: someone
    else wrote first."""


async def publish_expecting(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    expected_last_seq: int,
    headers: dict[str, str] | None = None,
) -> js_api.PubAck:
    """Publish only if ``subject``'s last sequence is still ``expected_last_seq`` (0: the
    subject is empty); :class:`StaleSequence` otherwise. The optimistic-concurrency write
    that lets two racing replicas never both win."""
    hdrs = {**(headers or {}), "Nats-Expected-Last-Subject-Sequence": str(expected_last_seq)}
    try:
        return await js.publish(subject, data, headers=hdrs)
    except APIError as exc:
        if exc.err_code == WRONG_LAST_SEQUENCE:
            raise StaleSequence(subject) from None
        raise


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str
    work_queue: bool = False
    max_age: float = 0.0  # seconds; 0 = keep forever
    max_bytes: int = -1
    max_msgs_per_subject: int = -1
    duplicate_window: float = 120.0

    def config(self, replicas: int = 1) -> js_api.StreamConfig:
        return js_api.StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=(
                js_api.RetentionPolicy.WORK_QUEUE
                if self.work_queue
                else js_api.RetentionPolicy.LIMITS
            ),
            storage=js_api.StorageType.FILE,
            max_age=self.max_age,
            max_bytes=self.max_bytes,
            max_msgs_per_subject=self.max_msgs_per_subject,
            duplicate_window=self.duplicate_window,
            num_replicas=replicas,
            allow_direct=True,
        )


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer shared by every replica of one worker kind."""

    stream: str
    durable: str
    filter_subject: str
    ack_wait: float = 30.0
    max_ack_pending: int = 1000
    description: str = ""

    def config(self) -> js_api.ConsumerConfig:
        # max_deliver stays unlimited on the server: the runtime dead-letters at its own
        # limit, including for messages whose handler killed the process every time.
        return js_api.ConsumerConfig(
            durable_name=self.durable,
            description=self.description or None,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            filter_subject=self.filter_subject,
            max_ack_pending=self.max_ack_pending,
            max_waiting=512,
        )


# The retention rules of every stream, in one place (see README "Streams and retention").
STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        S.STREAM_INGEST,
        (S.INGEST_REQUESTS,),
        "Ingest requests (work queue; a message is removed once acked).",
        work_queue=True,
    ),
    StreamSpec(
        S.STREAM_CATALOG,
        (S.all_under(S.CATALOG_EVENTS_PREFIX),),
        "Catalog change events; full history, the source of truth for rebuilds.",
    ),
    StreamSpec(
        S.STREAM_EMBED,
        (S.all_under(S.EMBED_REQUESTS_PREFIX),),
        "Embed requests (work queue).",
        work_queue=True,
    ),
    StreamSpec(
        S.STREAM_VECTORS,
        (S.all_under(S.VECTORS_PREFIX),),
        "Vector batches per index partition; full history, replayed to rebuild indexes.",
    ),
    StreamSpec(
        S.STREAM_INDEXES,
        (S.all_under(S.INDEXES_PREFIX),),
        "Vector index definitions; the last one per index is current.",
        max_msgs_per_subject=16,
    ),
    StreamSpec(
        S.STREAM_JOBS,
        (S.all_under(S.JOBS_PREFIX),),
        "Job status updates; the last few per job, kept 7 days.",
        max_age=7 * DAY,
        max_msgs_per_subject=8,
    ),
    StreamSpec(
        S.STREAM_DLQ,
        (S.all_under(S.DLQ_PREFIX),),
        "Dead-lettered messages with their errors, kept 30 days.",
        max_age=30 * DAY,
    ),
)


@dataclass
class ProvisionReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


async def connect(
    settings: Settings, name: str, *, deadline: float | None = STARTUP_DEADLINE
) -> NATS:
    """Connect with reconnect enabled; keep trying the first connect until ``deadline``.

    With ``tls.ca_file`` set the server must present a certificate of that CA (``nats://``
    or ``tls://`` URLs alike), and ``tls.cert_file``/``key_file``, when set, are presented
    for mutual TLS. Replies come back under ``nats.inbox_prefix``."""
    ns = settings.nats
    last_error: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        # A failed first connect reaches wait_for below only as a timeout; its cause (a
        # refused certificate, say) comes here. Only the last one is kept.
        last_error[:] = [exc]
        await _on_error(exc)

    opts: dict[str, Any] = {
        "servers": [u.strip() for u in ns.url.split(",")],
        "name": name,
        "connect_timeout": ns.connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "ping_interval": ns.ping_interval,
        "max_outstanding_pings": ns.max_outstanding_pings,
        "error_cb": on_error,
        "disconnected_cb": _on_disconnect,
        "reconnected_cb": _on_reconnect,
        "inbox_prefix": ns.inbox_prefix,
    }
    ctx = client_context(settings.tls)
    if ctx is not None:
        opts["tls"] = ctx
    if ns.user:
        opts["user"] = ns.user
    if ns.password:
        opts["password"] = ns.password.get_secret_value()
    if ns.token:
        opts["token"] = ns.token.get_secret_value()
    if ns.creds_file:
        opts["user_credentials"] = str(ns.creds_file)
    loop = asyncio.get_running_loop()
    give_up = None if deadline is None else loop.time() + deadline
    tries = 0
    while True:
        delay = backoff.delay(tries, 0.1, 5.0)
        tries += 1
        # nats-py keeps retrying an unreachable first server forever when reconnect is on:
        # bound each attempt, and let the loop below decide when to give up.
        attempt = max(ns.connect_timeout, 1.0)
        if give_up is not None:
            attempt = max(0.5, min(attempt, give_up - loop.time()))
        last_error.clear()
        try:
            return await asyncio.wait_for(nats.connect(**opts), attempt)
        except Exception as exc:
            cause = last_error[0] if last_error and isinstance(exc, TimeoutError) else exc
            why = type(cause).__name__
            if isinstance(cause, ssl.SSLError):  # say which: unknown CA, no client cert, ...
                why += f" ({getattr(cause, 'verify_message', None) or cause.reason})"
            if give_up is not None and loop.time() + delay > give_up:
                raise ConnectionError(
                    f"cannot connect to NATS at {redact_url(ns.url)}: {why}"
                ) from None
            log.warning(
                "nats connect failed, retrying",
                extra={"url": redact_url(ns.url), "error": why, "retry_in": delay},
            )
            await asyncio.sleep(delay)


async def settle(nc: NATS) -> None:
    """Return once the server has every subscription made so far on ``nc``.

    ``nc.flush()`` alone is not enough: nats-py writes its PING straight to the socket while
    SUBs wait in the client's pending buffer, so the PONG can come back before a SUB was even
    sent (a request right after "ready" then got a 503 no-responders). Write the pending
    buffer first, then round-trip a PING."""
    written = await nc._flush_pending()  # resolves once the flusher wrote the buffer
    if written is not None:
        await written
    await nc.flush()


async def _on_error(exc: Exception) -> None:
    found = refusals.remember(exc)
    if found is not None:
        operation, subject = found
        log.error("nats permission denied", extra={"operation": operation, "subject": subject})
        return
    log.warning("nats error", extra={"error": f"{type(exc).__name__}: {exc}"})


async def _on_disconnect() -> None:
    log.warning("nats disconnected")


async def _on_reconnect() -> None:
    log.info("nats reconnected")


_STREAM_FIELDS = (
    "description",
    "subjects",
    "retention",
    "storage",
    "max_age",
    "max_bytes",
    "max_msgs_per_subject",
    "duplicate_window",
    "allow_direct",
    "num_replicas",
)
_CONSUMER_FIELDS = (
    "description",
    "ack_policy",
    "ack_wait",
    "max_deliver",
    "filter_subject",
    "max_ack_pending",
)


def _differs(current: Any, desired: Any, fields: tuple[str, ...]) -> list[str]:
    out = []
    for f in fields:
        a, b = getattr(current, f, None), getattr(desired, f, None)
        if isinstance(a, float) or isinstance(b, float):
            if abs((a or 0.0) - (b or 0.0)) > 1e-6:
                out.append(f)
        elif a != b:
            out.append(f)
    return out


async def provision(
    js: JetStreamContext,
    streams: tuple[StreamSpec, ...] | list[StreamSpec] = STREAMS,
    consumers: tuple[ConsumerSpec, ...] | list[ConsumerSpec] = (),
    *,
    replicas: int | None = None,
    patience: float = 0.0,
) -> ProvisionReport:
    """Create missing streams/consumers, update changed ones, leave the rest alone. Streams
    get ``replicas`` copies (``nats.replicas``; a different number scales an existing stream;
    None: an existing stream keeps its own, a new one gets 1); durable consumers inherit
    their stream's. With ``patience``, a pass that times out or meets a JetStream 503 (a
    clustered stream electing its leader, a server busy under load) runs again on the backoff
    schedule for up to that many seconds; nothing else is retried."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + patience
    for attempt in itertools.count():
        try:
            return await _provision(js, streams, consumers, replicas)
        except (nats.errors.TimeoutError, ServiceUnavailableError) as exc:
            wait = backoff.delay(attempt, 0.5, 5.0)
            if loop.time() + wait > give_up:
                raise
            log.warning(
                "provisioning again",
                extra={"attempt": attempt + 1, "error": f"{type(exc).__name__}: {exc}"[:200]},
            )
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


async def _provision(
    js: JetStreamContext,
    streams: tuple[StreamSpec, ...] | list[StreamSpec],
    consumers: tuple[ConsumerSpec, ...] | list[ConsumerSpec],
    replicas: int | None,
) -> ProvisionReport:
    report = ProvisionReport()
    for spec in streams:
        desired = spec.config(replicas or 1)
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(desired)
            report.created.append(f"stream {spec.name}")
            continue
        if replicas is None:
            desired.num_replicas = info.config.num_replicas
        changed = _differs(info.config, desired, _STREAM_FIELDS)
        if changed:
            await js.update_stream(desired)
            report.updated.append(f"stream {spec.name} ({', '.join(changed)})")
        else:
            report.unchanged.append(f"stream {spec.name}")
    for cspec in consumers:
        desired_c = cspec.config()
        label = f"consumer {cspec.stream}/{cspec.durable}"
        try:
            cinfo = await js.consumer_info(cspec.stream, cspec.durable)
        except NotFoundError:
            await js.add_consumer(cspec.stream, desired_c)
            report.created.append(label)
            continue
        changed = _differs(cinfo.config, desired_c, _CONSUMER_FIELDS)
        if changed:
            await js.add_consumer(cspec.stream, desired_c)  # create-or-update on the server
            report.updated.append(f"{label} ({', '.join(changed)})")
        else:
            report.unchanged.append(label)
    if report.created or report.updated:
        log.info(
            "provisioned",
            extra={"provisioned_new": report.created, "provisioned_changed": report.updated},
        )
    return report
