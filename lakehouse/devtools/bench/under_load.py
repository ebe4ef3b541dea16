"""The ``concurrency`` workload's search-under-load point: vector search at
:data:`~lakehouse.devtools.bench.concurrency.SCALE_CLIENTS` clients while ``size.load`` more
vectors are loaded (the upstream way) into a second index on the same vector worker, next to
the same clients' p99 with nothing loading, measured just before. The vectors arrive while the
worker answers searches: HNSW insertion and search share its cores.

The loaded point runs for ``size.seconds`` starting once the worker is applying the load
(its count has moved); the row's note says how many of the vectors arrived inside the
window, so a window that outlasted the load says so. Correctness as at every point: k hits,
never partial, recall@10 of the sample at least 0.9.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from lakehouse.devtools.bench.data import clustered
from lakehouse.devtools.bench.workloads import Row, index_count, new_index, publish, wait_count
from lakehouse.devtools.servers import wait_until

if TYPE_CHECKING:
    from lakehouse.devtools.bench.closedloop import Point
    from lakehouse.devtools.bench.concurrency import Size
    from lakehouse.devtools.stack import Stack

LOADED = "bench_conc_load"


def search_under_load(
    stack: Stack, size: Size, measure: Callable[[str], Point], clients: int
) -> list[Row]:
    """``measure(what)``: one search point at ``clients`` clients (the caller's, with its
    correctness checks). Returns the loaded p99 against the idle one, and the load's rate."""
    what = f"vector search, {clients} clients"
    idle = measure(f"{what}, idle")
    data = clustered(size.load, size.dim, centers=max(50, size.load // 200), noise=0.5, seed=7)
    failed: list[BaseException] = []

    def load() -> None:
        try:
            asyncio.run(publish(stack.nats_url, LOADED, data, size.partitions))
        except BaseException as exc:  # raised again below
            failed.append(exc)

    with httpx.Client(base_url=stack.base, timeout=60) as c:
        new_index(c, {"name": LOADED, "dim": size.dim, "partitions": size.partitions})
        started = time.perf_counter()
        publisher = threading.Thread(target=load, daemon=True)
        publisher.start()
        wait_until(
            lambda: failed or index_count(c, LOADED) > 0,
            timeout=120,
            interval=0.05,
            what="the load",
        )
        before = index_count(c, LOADED)
        loaded = measure(f"{what}, during a {size.load:,}-vector load")
        inside = index_count(c, LOADED) - before
        publisher.join()
        if failed:
            raise failed[0]
        wait_count(c, LOADED, size.load, timeout=36_000)
        seconds = time.perf_counter() - started
        c.delete(f"/v1/vectors/indexes/{LOADED}").raise_for_status()
    return [
        Row(
            f"concurrency: {what}, p99 during a vector load (ms)",
            loaded.p99,
            idle.p99,
            "ms",
            note=f"floor: the same clients with nothing loading, measured just before; "
            f"{inside:,} of the {size.load:,}×{size.dim} vectors arrived in the "
            f"{size.seconds:g} s window; p50 {loaded.p50:.2f} vs {idle.p50:.2f} ms, QPS "
            f"{loaded.qps:.0f} vs {idle.qps:.0f}",
        ),
        Row(
            "concurrency: vector load while searched (vectors/s)",
            size.load / seconds,
            None,
            "vectors/s",
            note=f"{size.load:,}×{size.dim} into a second index, {clients} clients searching "
            f"the first for the first {size.seconds:g} s of it",
        ),
    ]
