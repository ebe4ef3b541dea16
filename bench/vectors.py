"""Vector load and search through the pipeline, next to raw hnswlib in the same run.

    .venv/bin/python bench/vectors.py [--n 100000] [--dim 384] [--partitions 4]

Raw floor: hnswlib add_items on all cores (same M/ef_construction) and knn_query. Ours:
precomputed clustered unit vectors published as binary batches on
lakehouse.vectors.<index>.<p> (the documented upstream path) until every partition has
applied them; search by vector through POST /v1/vectors/index/{name}/search, also while a
second load runs; recall@10 vs numpy brute force; vector worker RSS per vector.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lakehouse.bench.workloads import publish, raw_floor
from tests.support.stack import Stack
from tests.support.vecdata import clustered, exact_topk, recall


def pct(v: list[float], p: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, round(p * (len(v) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    n, dim = args.n, args.dim
    data = clustered(n, dim, centers=500, noise=0.5)
    queries = clustered(args.queries, dim, centers=500, noise=0.5, sample=99)
    truth = exact_topk(data, queries, 10)

    raw_s, raw_ms, raw_found = raw_floor(data, queries)
    raw_rate = n / raw_s
    raw_bytes = n * (dim * 4 + 16 * 2 * 4 + 4 + 8)

    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp) / "stack", overrides={"vectors": {"snapshot_every": 3600}}).start(
            ("vectors",)
        )
        try:
            c = httpx.Client(base_url=stack.base, timeout=60)
            spec = {"name": "bench", "dim": dim, "partitions": args.partitions}
            c.post("/v1/vectors/index", json=spec).raise_for_status()
            while c.get("/v1/vectors/index/bench").json()["missing_partitions"]:
                time.sleep(0.1)
            t = time.perf_counter()
            asyncio.run(publish(stack.nats.url, "bench", data, args.partitions))
            while c.get("/v1/vectors/index/bench").json()["count"] < n:
                time.sleep(0.2)
            ours_rate = n / (time.perf_counter() - t)

            def search(q: np.ndarray) -> tuple[float, list[int]]:
                t0 = time.perf_counter()
                r = c.post("/v1/vectors/index/bench/search", json={"vector": q.tolist(), "k": 10})
                r.raise_for_status()
                return (time.perf_counter() - t0) * 1000, [
                    int(h["id"][1:]) for h in r.json()["hits"]
                ]

            for q in queries[:20]:
                search(q)
            ours_ms, found = [], []
            for q in queries:
                ms, ids = search(q)
                ours_ms.append(ms)
                found.append(ids)
            worker = psutil.Process(stack.procs["vectors"][0].pid)
            rss = worker.memory_info().rss

            # search latency while a second load (into another index) runs
            c.post("/v1/vectors/index", json={**spec, "name": "bench2"}).raise_for_status()
            while c.get("/v1/vectors/index/bench2").json()["missing_partitions"]:
                time.sleep(0.1)
            extra = data[: n // 4]
            loader = threading.Thread(
                target=lambda: asyncio.run(
                    publish(stack.nats.url, "bench2", extra, args.partitions)
                )
            )
            loader.start()
            during = []
            while c.get("/v1/vectors/index/bench2").json()["count"] < len(extra):
                during.append(search(queries[len(during) % len(queries)])[0])
            loader.join()
        finally:
            stack.stop()

    print(f"n={n} dim={dim} partitions={args.partitions} cores={psutil.cpu_count()}")
    print("| workload | ours | floor (raw hnswlib, same run) | ratio |")
    print("|---|---|---|---|")
    print(f"| load vectors/s | {ours_rate:,.0f} | {raw_rate:,.0f} | {ours_rate / raw_rate:.2f}x |")
    print(
        f"| search p50 / p99 ms | {statistics.median(ours_ms):.2f} / {pct(ours_ms, 0.99):.2f} "
        f"| {statistics.median(raw_ms):.2f} / {pct(raw_ms, 0.99):.2f} "
        f"| +{statistics.median(ours_ms) - statistics.median(raw_ms):.2f} ms |"
    )
    print(f"| recall@10 | {recall(found, truth):.3f} | {recall(raw_found, truth):.3f} | |")
    if during:
        print(
            f"| search p50 / p99 ms during a {len(extra):,}-vector load | "
            f"{statistics.median(during):.2f} / {pct(during, 0.99):.2f} | "
            f"| ({len(during)} searches) |"
        )
    print(
        f"| vector worker RSS per vector | {rss / n:,.0f} B | {raw_bytes / n:,.0f} B "
        f"(hnswlib formula) | {rss / raw_bytes:.2f}x |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
