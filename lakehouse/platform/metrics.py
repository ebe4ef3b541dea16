"""Prometheus metrics: the definition of every metric of every process, and the small
functions the rest of the code calls to move them.

Each process exports the default registry: the gateway at ``GET /metrics`` (:class:`HttpMetrics`
counts its requests), a worker process on a port of its own (:func:`serve`; the bound port is
in its health reply, so ``/health`` and ``lakehouse status`` list it). Label values stay
bounded: worker kinds, declared subjects (a consumer's filter or a service's subject pattern,
never a concrete per-dataset subject), durable consumer names, stream names, route templates,
index partitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

log = logging.getLogger("lakehouse.metrics")

# ---- workers ---------------------------------------------------------------------------------
WORKER = Gauge(
    "lakehouse_worker_info", "A worker runtime in this process (always 1).", ["kind", "instance"]
)
MESSAGES = Counter(
    "lakehouse_messages",
    "Messages handled, by worker kind, declared subject and outcome (acked, retry, "
    "dead-lettered for consumers; ok, error for services).",
    ["kind", "subject", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "lakehouse_handler_seconds",
    "Seconds a handler took, by worker kind and declared subject.",
    ["kind", "subject"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
IN_FLIGHT = Gauge("lakehouse_in_flight", "Messages being handled right now.", ["kind"])
DEAD_LETTERS = Counter(
    "lakehouse_dead_letters",
    "Messages published to lakehouse.dlq.<kind>, by worker kind and source stream.",
    ["kind", "stream"],
)
CONSUMER_PENDING = Gauge(
    "lakehouse_consumer_pending",
    "Messages a durable consumer has not delivered yet (JetStream num_pending).",
    ["kind", "stream", "consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "lakehouse_consumer_ack_pending",
    "Messages delivered and not acknowledged yet (JetStream num_ack_pending).",
    ["kind", "stream", "consumer"],
)
PARTITION_VECTORS = Gauge(
    "lakehouse_vector_partition_vectors",
    "Live vectors of a partition this process owns.",
    ["index", "partition", "owner"],
)
PARTITION_BYTES = Gauge(
    "lakehouse_vector_partition_bytes",
    "Estimated memory of a partition this process owns.",
    ["index", "partition", "owner"],
)
SEARCH_BATCH = Histogram(
    "lakehouse_vector_search_batch_size",
    "Unfiltered searches of one index answered together by a vector worker (one knn_query "
    "per partition for the batch).",
    ["index"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
QUERY_CACHE = Counter(
    "lakehouse_query_cache_requests",
    "Lookups of a query worker cache, by cache and result (hit, miss, bypass: too large to keep).",
    ["cache", "result"],
)

# ---- gateway ---------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "lakehouse_http_requests",
    "Gateway requests, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "lakehouse_http_request_seconds",
    "Seconds from a gateway request's arrival to the end of its response.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
UPLOAD_BYTES = Counter(
    "lakehouse_upload_bytes", "Bytes of uploaded files streamed through the gateway.", ["route"]
)

# ---- worker side -----------------------------------------------------------------------------
_in_flight: dict[str, dict[str, Callable[[], int]]] = {}  # kind -> instance -> its count


def worker_started(kind: str, instance: str, in_flight: Callable[[], int]) -> None:
    """Register a worker runtime: its info series and its in-flight count (summed over the
    runtimes of ``kind`` in this process; tests run several in one)."""
    WORKER.labels(kind, instance).set(1)
    sources = _in_flight.setdefault(kind, {})
    sources[instance] = in_flight
    IN_FLIGHT.labels(kind).set_function(lambda: sum(f() for f in list(sources.values())))


def worker_stopped(kind: str, instance: str) -> None:
    _in_flight.get(kind, {}).pop(instance, None)
    _remove(WORKER, (kind, instance))


def handled(kind: str, subject: str, outcome: str, seconds: float) -> None:
    """One message handled: ``subject`` is the declared one (a pattern), never a concrete
    per-dataset subject."""
    MESSAGES.labels(kind, subject, outcome).inc()
    HANDLER_SECONDS.labels(kind, subject).observe(seconds)


def dead_lettered(kind: str, stream: str) -> None:
    DEAD_LETTERS.labels(kind, stream).inc()


async def watch_consumers(
    info: Callable[[str, str], Awaitable[Any]],
    kind: str,
    consumers: Iterable[tuple[str, str]],
    stop: asyncio.Event,
    every: float = 5.0,
) -> None:
    """Until ``stop``: every ``every`` seconds, the pending and ack-pending counts of each
    (stream, durable) from ``info`` (``js.consumer_info``)."""
    consumers = list(consumers)
    while not stop.is_set():
        for stream, durable in consumers:
            try:
                ci = await info(stream, durable)
            except Exception as exc:  # NATS away for a moment: the next turn tries again
                log.debug("consumer info failed", extra={"consumer": durable, "error": str(exc)})
                continue
            CONSUMER_PENDING.labels(kind, stream, durable).set(ci.num_pending or 0)
            CONSUMER_ACK_PENDING.labels(kind, stream, durable).set(ci.num_ack_pending or 0)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


_partitions: dict[str, set[tuple[str, int]]] = {}


def vector_partitions(owner: str, sizes: Mapping[tuple[str, int], tuple[int, int]]) -> None:
    """The partitions ``owner`` holds now, (index, number) -> (vectors, bytes); the series
    of partitions it no longer holds are removed."""
    held = _partitions.setdefault(owner, set())
    for index, number in held - set(sizes):
        for gauge in (PARTITION_VECTORS, PARTITION_BYTES):
            _remove(gauge, (index, str(number), owner))
    held.clear()
    held.update(sizes)
    for (index, number), (count, nbytes) in sizes.items():
        PARTITION_VECTORS.labels(index, str(number), owner).set(count)
        PARTITION_BYTES.labels(index, str(number), owner).set(nbytes)


def search_batch(index: str, size: int) -> None:
    """A vector worker answered ``size`` searches of ``index`` together."""
    SEARCH_BATCH.labels(index).observe(size)


def cache_lookup(cache: str, result: str) -> None:
    """A query worker cache lookup: ``result`` is hit, miss or bypass."""
    QUERY_CACHE.labels(cache, result).inc()


_exporters: dict[tuple[str, int], int] = {}


def serve(port: int, host: str = "127.0.0.1") -> int:
    """Start this process's metrics exporter (HTTP, a daemon thread) and return its port;
    ``port`` 0 picks a free one. One exporter per process serves every runtime in it: a
    second call for port 0 (or the same port) returns the first one's port."""
    if port == 0:
        for (h, _), bound in _exporters.items():
            if h == host:
                return bound
    if (host, port) in _exporters:
        return _exporters[(host, port)]
    server, _ = start_http_server(port, addr=host)
    bound = int(server.server_port)
    _exporters[(host, port)] = bound
    log.info("metrics exporter listening", extra={"host": host, "port": bound})
    return bound


# ---- gateway side ----------------------------------------------------------------------------
def exposition() -> tuple[bytes, str]:
    """The registry in the text format, and its content type (for ``GET /metrics``)."""
    return generate_latest(), CONTENT_TYPE_LATEST


def uploaded(route: str, nbytes: int) -> None:
    UPLOAD_BYTES.labels(route).inc(nbytes)


def route_of(scope: Mapping[str, Any]) -> str:
    """The template of the route that answered (``/v1/catalog/{name}``), or ``unmatched``:
    a label never holds a concrete path."""
    return str(getattr(scope.get("route"), "path", None) or "unmatched")


class HttpMetrics:
    """ASGI middleware: each HTTP request counted by method, route template and status, and
    its duration (to the end of the response body) observed."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method, route = scope["method"], route_of(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)


# ---- helpers ---------------------------------------------------------------------------------
def _remove(metric: Gauge, labels: tuple[str, ...]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass
