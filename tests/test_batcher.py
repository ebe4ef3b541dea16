"""Requests answered together (lakehouse.vectors.batcher): what arrives while a batch runs
is the next batch, each caller gets its own result, failures and cancellations stay bounded."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lakehouse.vectors.batcher import Batcher
from lakehouse.vectors.batches import Batch
from lakehouse.vectors.partition import Partition
from schemas.vectors import IndexSpec


async def test_one_request_alone_runs_at_once_and_concurrent_ones_share_batches() -> None:
    sizes: list[int] = []
    busy, gate = asyncio.Event(), asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if len(sizes) == 1:
            busy.set()
            await gate.wait()  # the first batch is busy while the others arrive
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(run, most=8)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.wait_for(busy.wait(), 5)  # a batch of one, started with nothing waited for
    assert sizes == [1]
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 21)]
    await asyncio.sleep(0)  # all 20 queued
    gate.set()
    assert await asyncio.gather(first, *rest) == [i * 10 for i in range(21)]
    assert sizes == [1, 8, 8, 4]  # 20 waiting: batches of at most 8, in arrival order
    assert batcher.task is None and not batcher.queue


async def test_a_failing_batch_fails_its_callers_only() -> None:
    async def run(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("bad batch")
        return items

    batcher: Batcher[int, int] = Batcher(run, most=1)
    got = await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)
    assert got[:3] == [0, 1, 2] and got[4] == 4
    assert isinstance(got[3], ValueError)


async def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    release = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        await release.wait()
        return items

    batcher: Batcher[int, int] = Batcher(run)
    leaving = asyncio.create_task(batcher.submit(1))
    staying = asyncio.create_task(batcher.submit(2))
    while len(batcher.queue) < 2:
        await asyncio.sleep(0)
    leaving.cancel()
    release.set()
    assert await staying == 2
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_closing_fails_what_is_in_flight_and_queued() -> None:
    async def run(items: list[int]) -> list[int]:
        await asyncio.Event().wait()  # never answers
        return items

    batcher: Batcher[int, int] = Batcher(run, most=1)
    calls = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    while batcher.task is None or len(batcher.queue) > 2:  # one in flight, two queued
        await asyncio.sleep(0)
    await batcher.close()
    for call in calls:
        with pytest.raises(RuntimeError, match="search stopped"):
            await call


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_a_batched_search_answers_each_query_as_alone(metric: str) -> None:
    rng = np.random.default_rng(3)
    spec = IndexSpec(name="b", dim=16, partitions=1, metric=metric)
    part = Partition(spec, 0, threads=2)
    data = rng.standard_normal((2000, 16), dtype=np.float32)
    ids = [f"v{i}" for i in range(2000)]
    part.apply(Batch(ids, ["upsert"] * 2000, data, [{"i": i} for i in range(2000)]), seq=1)
    queries = rng.standard_normal((40, 16), dtype=np.float32)
    together = part.search_many(queries, 10, 64)
    assert together == [part.search(q, 10, 64) for q in queries]
    assert all(len(hits) == 10 for hits in together)
    assert together[0][0][2] == {"i": int(together[0][0][0][1:])}
