"""Vector workers crash and recover: kill -9 mid-load, full replay without snapshots, and
partition takeover by a surviving replica."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time

import httpx
import nats
import numpy as np
import pytest

from lakehouse.devtools.bench.data import clustered
from lakehouse.devtools.servers import eventually
from lakehouse.devtools.stack import Stack
from lakehouse.vectors import batches

DIM, N, PARTS = 32, 50_000, 4


pytestmark = [
    pytest.mark.slow,
    pytest.mark.stack(
        kinds=("vectors",),
        overrides={
            "vectors": {"snapshot_every": 1.0, "snapshot_min_changes": 2000, "lease_ttl": 3.0}
        },
    ),
]


def stats(stack: Stack, name: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{stack.base}/v1/vectors/indexes/{name}", timeout=10).json()  # type: ignore[no-any-return]


async def load(
    stack: Stack, name: str, data: np.ndarray, batch: int = 1000, parts: int = PARTS
) -> None:
    nc = await nats.connect(stack.nats.url)
    ids = [f"v{i}" for i in range(len(data))]
    encoded = batches.batches(ids, data, dim=DIM, partitions=parts, max_rows=batch // parts)
    await batches.publish(nc.jetstream(), name, encoded)
    await nc.close()


def check_search(stack: Stack, name: str, data: np.ndarray) -> None:
    with httpx.Client(base_url=stack.base, timeout=10) as c:
        for i in (0, 777, 12_345, N - 1):
            r = c.post(
                f"/v1/vectors/indexes/{name}/search", json={"vector": data[i].tolist(), "k": 3}
            ).json()
            assert not r["partial"] and r["hits"][0]["id"] == f"v{i}"


def create(stack: Stack, name: str) -> None:
    r = httpx.post(
        f"{stack.base}/v1/vectors/indexes", json={"name": name, "dim": DIM, "partitions": PARTS}
    )
    assert r.status_code == 201, r.text


async def test_kill_9_mid_load_then_a_new_worker_finishes_exactly(stack: Stack) -> None:
    data = clustered(N, DIM)
    create(stack, "crash")
    loader = asyncio.create_task(load(stack, "crash", data))
    await eventually(
        lambda: stats(stack, "crash")["count"] > 5_000, timeout=60, what="load to start"
    )
    stack.kill("vectors")  # kill -9 mid-load
    await loader
    started = time.monotonic()
    stack.spawn("vectors", "worker", "vectors")
    await eventually(
        lambda: stats(stack, "crash")["count"] == N, timeout=180, interval=0.3, what="full count"
    )
    recovered = time.monotonic() - started
    s = stats(stack, "crash")
    assert s["missing_partitions"] == []
    assert sum(p["count"] for p in s["partitions_detail"]) == N  # no duplicates: one entry per id
    check_search(stack, "crash", data)
    print(f"recovered {N} vectors in {recovered:.1f}s after kill -9")

    # Full replay: no snapshots at all.
    stack.kill("vectors")
    shutil.rmtree(stack.settings.data_dir / "objects" / "_vectors", ignore_errors=True)
    stack.spawn("vectors", "worker", "vectors")
    await eventually(
        lambda: stats(stack, "crash")["count"] == N, timeout=180, interval=0.3, what="full replay"
    )
    check_search(stack, "crash", data)


async def test_two_workers_split_partitions_and_one_takes_over(stack: Stack) -> None:
    stack.spawn("vectors", "worker", "vectors")
    create(stack, "split")
    data = clustered(4000, DIM)
    await load(stack, "split", data)

    def owners() -> dict[int, str]:
        return {p["partition"]: p["owner"] for p in stats(stack, "split")["partitions_detail"]}

    await eventually(
        lambda: len(set(owners().values())) == 2 and len(owners()) == PARTS,
        timeout=30,
        what="split",
    )
    victim = stack.procs["vectors"][0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    started = time.monotonic()
    await eventually(
        lambda: (
            len(owners()) == PARTS
            and len(set(owners().values())) == 1
            and stats(stack, "split")["count"] == 4000
        ),
        timeout=30,
        interval=0.2,
        what="takeover",
    )
    took = time.monotonic() - started
    print(f"takeover in {took:.1f}s")
    assert took < 10
