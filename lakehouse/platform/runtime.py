"""The worker runtime every worker kind runs in.

A worker kind is a :class:`Worker` subclass declaring JetStream consumers (durable pull
consumers shared by all replicas) and core-NATS services (request/reply in a queue group).
The runtime owns everything else: connect, provision, bounded concurrency, ``in_progress``
heartbeats, ack after success, nak with backoff on transient errors, term + dead letter on
permanent errors or after ``max_deliver`` deliveries, one log line per message, health
replies, Prometheus metrics (:mod:`lakehouse.platform.metrics`, on the process's own port),
and a graceful stop on SIGTERM/SIGINT (stop fetching, finish in-flight, drain).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import nats.errors
import nats.js.errors
import uvloop
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from lakehouse.platform import backoff, metrics
from lakehouse.platform.bus import (
    STARTUP_DEADLINE,
    STREAMS,
    ConsumerSpec,
    StreamSpec,
    connect,
    provision,
    settle,
)
from lakehouse.platform.config import Settings
from lakehouse.platform.errors import Permanent
from lakehouse.platform.logs import setup_logging
from lakehouse.platform.rpc import error_reply, respond
from lakehouse.platform.storage import Storage, keys, open_storage
from schemas import subjects as S
from schemas.messages import DeadLetter, HealthReply

log = logging.getLogger("lakehouse.runtime")

MsgHandler = Callable[[Msg], Awaitable[None]]
ReplyHandler = Callable[[Msg], Awaitable[bytes]]


@dataclass(frozen=True)
class Consume:
    """Handle every message of a durable pull consumer."""

    consumer: ConsumerSpec
    handler: MsgHandler


@dataclass(frozen=True)
class Serve:
    """Answer requests on a core-NATS subject (one replica per request, by queue group).
    Up to ``concurrency`` requests run at once (default: the kind's concurrency)."""

    subject: str
    handler: ReplyHandler
    queue: bool = True
    concurrency: int | None = None


class Worker:
    """Base class of a worker kind: declare consumers and services; keep state on self."""

    kind: ClassVar[str] = "worker"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def streams(self) -> list[StreamSpec]:
        """Streams beyond the shared declaration (tests use this for private streams)."""
        return []

    def consumes(self) -> list[Consume]:
        return []

    def serves(self) -> list[Serve]:
        return []

    async def setup(self) -> None:
        """Open state (after NATS and storage are ready, before messages flow)."""

    async def teardown(self) -> None:
        """Close state (after in-flight work finished)."""

    async def dead_lettered(self, msg: Msg, failure: Permanent) -> None:
        """Called after a message was dead-lettered (e.g. to mark its job failed)."""

    def health_details(self) -> dict[str, str | int]:
        """Facts particular to this kind for its health reply (``/health`` shows them)."""
        return {}


class Runtime:
    def __init__(self, settings: Settings, worker_cls: type[Worker], *, burst: bool = False):
        self.settings = settings
        self.worker_cls = worker_cls
        self.kind = worker_cls.kind
        self.burst = burst
        self.instance = f"{self.kind}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.started_at = datetime.now(UTC)
        self.concurrency = settings.workers.concurrency_for(self.kind)
        self.nc: NATS
        self.js: JetStreamContext
        self.storage: Storage
        self.worker: Worker
        self.in_flight = 0
        self.outcomes: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._service_tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []
        self._loops: list[asyncio.Task[None]] = []
        self._watch: asyncio.Task[None] | None = None
        self.metrics_port: int | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stopping: finishing in-flight work", extra={"kind": self.kind})
            self._stop.set()

    async def run(self) -> int:
        """Process mode: start, then run until SIGTERM/SIGINT (or, in burst mode, until every
        consumer is drained); the exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        await self.start()
        return await self.stopped()

    async def start(self) -> None:
        """Connect, provision, open the worker's state, then serve and consume in the running
        event loop. In-process callers (``lakehouse.devtools.testing``) later call
        :meth:`request_stop` and await :meth:`stopped`."""
        self.nc = await connect(self.settings, self.instance)
        self.js = self.nc.jetstream()
        self.storage = open_storage(self.settings)
        self.worker = self.worker_cls(self)
        consumes = self.worker.consumes()
        await provision(
            self.js,
            [*STREAMS, *self.worker.streams()],
            [c.consumer for c in consumes],
            replicas=self.settings.nats.replicas,
            patience=STARTUP_DEADLINE,
        )
        await self.worker.setup()
        self._start_metrics(consumes)
        subs = [await self.nc.subscribe(S.HEALTH_PING, cb=self._on_health)]
        for svc in self.worker.serves():
            queue = f"{S.PREFIX}.{self.kind}" if svc.queue else ""
            subs.append(await self.nc.subscribe(svc.subject, queue=queue, cb=self._serve(svc)))
        await settle(self.nc)  # the server has every subscription before "ready"
        log.info(
            "worker ready",
            extra={"kind": self.kind, "instance": self.instance, "concurrency": self.concurrency},
        )
        self._subs = subs
        self._loops = [asyncio.create_task(self._pull_loop(c)) for c in consumes]

    async def stopped(self) -> int:
        """After :meth:`start`: wait for a stop, let in-flight work finish, close everything;
        0, or 1 when a consumer loop crashed."""
        rc = await self._wait(self._loops)
        if self._watch is not None:
            await stop_task(self._watch)
        metrics.worker_stopped(self.kind, self.instance)
        for sub in self._subs:
            await sub.drain()
        if self._service_tasks:
            await asyncio.wait(self._service_tasks)
        await self.worker.teardown()
        await self.storage.close()
        await self.nc.drain()
        log.info("worker stopped", extra={"kind": self.kind, "outcomes": dict(self.outcomes)})
        return rc

    def _start_metrics(self, consumes: list[Consume]) -> None:
        """Register with the metrics, start this process's exporter (``workers.metrics_port``;
        -1: none) and follow the consumers' pending counts."""
        w = self.settings.workers
        metrics.worker_started(self.kind, self.instance, lambda: self.in_flight)
        if w.metrics_port >= 0:
            try:
                self.metrics_port = metrics.serve(w.metrics_port, w.metrics_host)
            except OSError as exc:  # e.g. a fixed port taken by another replica
                log.warning("no metrics exporter", extra={"error": _describe(exc)})
        specs = [(c.consumer.stream, c.consumer.durable) for c in consumes]
        if specs:
            watch = metrics.watch_consumers(self.js.consumer_info, self.kind, specs, self._stop)
            self._watch = asyncio.create_task(watch)

    async def _wait(self, loops: list[asyncio.Task[None]]) -> int:
        """Until a stop signal (or, in burst mode, every consumer drained); then let each
        pull loop finish its in-flight handlers. A crashed loop stops the process (rc 1)."""
        rc = 0
        waiter = asyncio.create_task(self._stop.wait())
        pending: set[asyncio.Task[None] | asyncio.Task[bool]] = {waiter, *loops}
        while waiter in pending:
            if self.burst and all(t.done() for t in loops):
                break
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not waiter and t.exception() is not None:
                    log.error("consumer loop crashed", exc_info=t.exception())
                    rc = 1
                    self._stop.set()
        self._stop.set()
        waiter.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        return rc

    # ---- JetStream consumers ---------------------------------------------------------
    async def _pull_loop(self, consume: Consume) -> None:
        spec = consume.consumer
        psub = await self.js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not self._stop.is_set():
                free = self.concurrency - len(tasks)
                if free <= 0:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    msgs = await psub.fetch(free, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    if self.burst and not tasks and await self._drained(spec):
                        return
                    continue
                except (
                    nats.errors.ConnectionClosedError,
                    nats.errors.ConnectionReconnectingError,
                    # 503: the clustered consumer has no leader yet (just created, or its
                    # node died and the others are electing one); it will have one soon.
                    nats.js.errors.ServiceUnavailableError,
                ):
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    task = asyncio.create_task(self._handle(spec, consume.handler, msg))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            if tasks:
                await asyncio.wait(tasks)
            await psub.unsubscribe()

    async def _drained(self, spec: ConsumerSpec) -> bool:
        info = await self.js.consumer_info(spec.stream, spec.durable)
        return not info.num_pending and not info.num_ack_pending

    def backoff(self, delivery: int) -> float:
        w = self.settings.workers
        return backoff.delay(delivery - 1, w.backoff_base, w.backoff_max)

    async def _handle(self, spec: ConsumerSpec, handler: MsgHandler, msg: Msg) -> None:
        md = msg.metadata
        delivery = md.num_delivered
        max_deliver = self.settings.workers.max_deliver
        started = time.monotonic()
        self.in_flight += 1
        outcome = "acked"
        error: str | None = None
        try:
            if delivery > max_deliver:
                # The earlier attempts never reported back: the process died mid-handler.
                error = f"gave up after {delivery - 1} deliveries that did not finish"
                outcome = await self._dead_letter(spec, msg, error, permanent=False)
                return
            beat = asyncio.create_task(self._heartbeat(msg, spec.ack_wait))
            try:
                await handler(msg)
            finally:
                beat.cancel()
            await msg.ack_sync(timeout=5)
        except Permanent as exc:
            error = str(exc) or type(exc).__name__
            outcome = await self._dead_letter(spec, msg, error, permanent=True, failure=exc)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            error = _describe(exc)
            if delivery >= max_deliver:
                outcome = await self._dead_letter(spec, msg, error, permanent=False)
            else:
                delay = self.backoff(delivery)
                await _quietly(msg.nak(delay=delay))
                outcome = "retry"
        finally:
            self.in_flight -= 1
            self.outcomes[outcome] += 1
            elapsed = time.monotonic() - started
            metrics.handled(self.kind, spec.filter_subject, outcome, elapsed)
            record = {
                "kind": self.kind,
                "subject": msg.subject,
                "outcome": outcome,
                "duration_ms": round(elapsed * 1000, 2),
                "stream_seq": md.sequence.stream,
                "delivery": delivery,
            }
            if error:
                record["error"] = error
            log.log(logging.WARNING if error else logging.INFO, "handled", extra=record)

    async def _heartbeat(self, msg: Msg, ack_wait: float) -> None:
        every = max(0.2, ack_wait / 3)
        while True:
            await asyncio.sleep(every)
            await _quietly(msg.in_progress())

    async def _dead_letter(
        self,
        spec: ConsumerSpec,
        msg: Msg,
        error: str,
        *,
        permanent: bool,
        failure: Permanent | None = None,
    ) -> str:
        md = msg.metadata
        try:
            await self.publish_dead_letter(msg, error, permanent=permanent)
        except Exception as exc:
            # Never drop a message we could not dead-letter: let it come back later.
            log.error(
                "dead-letter failed",
                extra={"error": _describe(exc), "stream_seq": md.sequence.stream},
            )
            await _quietly(msg.nak(delay=self.backoff(md.num_delivered)))
            return "retry"
        await _quietly(msg.term())
        # What a client sees (e.g. a failed job): not an unexpected exception's text, which
        # stays in the dead letter and the log.
        failure = failure or Permanent(
            f"gave up after {md.num_delivered} deliveries; "
            f"`lakehouse dlq list {self.kind}` shows the error",
            status=500,
            error="gave up after retries",
        )
        try:
            await self.worker.dead_lettered(msg, failure)
        except Exception as exc:
            log.error("dead-letter hook failed", extra={"error": _describe(exc)})
        return "dead-lettered"

    async def publish_dead_letter(
        self,
        msg: Msg,
        error: str,
        *,
        permanent: bool = True,
        payload: bytes | None = None,
        part: str = "",
    ) -> None:
        """Publish a DeadLetter for ``msg`` on ``lakehouse.dlq.<kind>`` (large payloads go to
        storage and the letter carries their key). ``payload`` replaces the message's own (the
        failed part of it, e.g. the items a model could not embed); ``part`` names that part."""
        md = msg.metadata
        seq = md.sequence.stream
        data = msg.data if payload is None else payload
        tag = f"{seq}-{part}" if part else f"{seq}"
        letter = DeadLetter(
            kind=self.kind,
            subject=msg.subject,
            stream=md.stream,
            stream_seq=seq,
            deliveries=md.num_delivered,
            headers={k: str(v) for k, v in (msg.headers or {}).items()},
            error=error,
            permanent=permanent,
            failed_at=datetime.now(UTC),
        )
        if len(data) <= self.settings.workers.dlq_inline_max:
            letter.payload_b64 = base64.b64encode(data).decode()
        else:
            key = keys.dead_letter_payload(self.kind, md.stream, tag)
            await self.storage.put_bytes(key, data)
            letter.payload_key = key
        await self.js.publish(
            S.dlq(self.kind),
            letter.model_dump_json().encode(),
            headers={"Nats-Msg-Id": f"dlq-{md.stream}-{tag}"},
        )
        metrics.dead_lettered(self.kind, md.stream)

    # ---- core NATS -------------------------------------------------------------------
    def _serve(self, svc: Serve) -> Callable[[Msg], Awaitable[None]]:
        slots = asyncio.Semaphore(svc.concurrency or self.concurrency)

        async def handle(msg: Msg) -> None:
            started = time.monotonic()
            self.in_flight += 1
            outcome = "ok"
            headers: dict[str, str] | None = None
            try:
                body = await svc.handler(msg)
            except Exception as exc:
                outcome = "error"
                body, headers = error_reply(exc)
            finally:
                self.in_flight -= 1
                slots.release()
            if msg.reply:
                await _quietly(respond(self.nc, msg.reply, body, headers))
            self.outcomes[outcome] += 1
            elapsed = time.monotonic() - started
            metrics.handled(self.kind, svc.subject, outcome, elapsed)
            log.info(
                "handled",
                extra={
                    "kind": self.kind,
                    "subject": msg.subject,
                    "outcome": outcome,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )

        async def cb(msg: Msg) -> None:
            await slots.acquire()  # backpressure: the subscription waits for a free slot
            task = asyncio.create_task(handle(msg))
            self._service_tasks.add(task)
            task.add_done_callback(self._service_tasks.discard)

        return cb

    async def _on_health(self, msg: Msg) -> None:
        reply = HealthReply(
            kind=self.kind,
            instance=self.instance,
            pid=os.getpid(),
            started_at=self.started_at,
            in_flight=self.in_flight,
            handled=sum(self.outcomes.values()),
            metrics_port=self.metrics_port,
            details=self.worker.health_details(),
        )
        if msg.reply:
            await _quietly(msg.respond(reply.model_dump_json().encode()))


async def stop_task(task: asyncio.Task[Any], every: float = 1.0) -> None:
    """Cancel ``task`` and wait for it to end, cancelling again every ``every`` seconds: on
    Python 3.11 ``asyncio.wait_for`` (nats-py uses it for every request) can swallow a
    cancel when its inner future finishes at the same moment, and a loop that retries on the
    library's TimeoutError would then run on. Loops stopped this way should also check a
    flag."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _quietly(aw: Awaitable[object]) -> None:
    try:
        await aw
    except Exception as exc:  # the message will be redelivered; nothing else to do
        log.debug("ack/nak failed", extra={"error": _describe(exc)})


def run_worker(settings: Settings, worker_cls: type[Worker], *, burst: bool = False) -> int:
    """Process entry point for one worker of ``worker_cls``."""
    setup_logging(settings.log_level, settings.secret_values())
    # uvloop: about half the per-message overhead of the default loop (request/reply, fetch).
    return uvloop.run(Runtime(settings, worker_cls, burst=burst).run())
