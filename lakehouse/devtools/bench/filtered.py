"""The ``filtered`` workload: vector search restricted by a SQL predicate over the index's
dataset, at three selectivities (10%, 2%, 0.1% of rows), through the gateway.

Floors in the same run: raw hnswlib over one graph of the same vectors with a filter
callback (ef 64), and an exact numpy scan of the subset (given its row numbers). Recall@10
is measured against the exact filtered top-10 computed with numpy; it is asserted (≥ 0.95),
timings never are.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
import numpy as np

from lakehouse.devtools.bench.data import clustered, recall
from lakehouse.devtools.bench.workloads import (
    Lean,
    Row,
    new_index,
    p,
    publish,
    raw_index,
    timed_post,
    wait_count,
)
from lakehouse.devtools.stack import Stack

# bucket is a uniform draw from 0..999, so "bucket < 100" keeps 10% of the rows. The first
# query of the first selectivity is the stack's first filtered query (cold).
SELECTIVITIES = (("2%", 20), ("0.1%", 1), ("10%", 100))
INDEX, DATASET = "bench_filtered", "bench_attrs"


def exact_filtered(data: np.ndarray, subset: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the k nearest (cosine) among ``subset``."""
    sims = data[subset] @ q
    m = min(k, subset.size)
    top = np.argpartition(-sims, m - 1)[:m] if m < subset.size else np.arange(subset.size)
    return subset[top[np.argsort(-sims[top])]]


def raw_filtered(
    data: np.ndarray, queries: np.ndarray, keeps: list[np.ndarray], k: int
) -> list[tuple[list[float], list[list[int]]]]:
    """Raw hnswlib (M 16, ef_construction 200, ef 64) with a filter callback, per subset:
    milliseconds and labels per query."""
    raw = raw_index(data)
    out = []
    for keep in keeps:
        allowed = set(np.flatnonzero(keep).tolist())  # faster to test than a numpy mask
        ms, found = [], []
        for q in queries:
            t = time.perf_counter()
            labels, _ = raw.knn_query(
                q.reshape(1, -1),
                k=min(k, len(allowed)),  # hnswlib fails asking for more than there are
                num_threads=1,
                filter=allowed.__contains__,
            )
            ms.append((time.perf_counter() - t) * 1000)
            found.append(labels[0].tolist())
        out.append((ms, found))
    return out


def data_for(n: int, dim: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vectors, the queries and each row's bucket (a uniform draw from 0..999)."""
    centers = max(50, n // 200)
    data = clustered(n, dim, centers=centers, noise=0.5, seed=21)
    qs = clustered(queries, dim, centers=centers, noise=0.5, seed=21, sample=5)
    return data, qs, np.random.default_rng(21).integers(0, 1000, size=n)


def load(stack: Stack, data: np.ndarray, bucket: np.ndarray, parts: int = 4) -> None:
    """The attribute dataset (id, bucket) and an index over it, loaded the upstream way."""
    n, dim = data.shape
    csv = "id,bucket\n" + "".join(f"v{i},{b}\n" for i, b in enumerate(bucket.tolist()))
    with httpx.Client(base_url=stack.base, timeout=600) as c:
        c.post(f"/v1/ingest?name={DATASET}&wait=600", content=csv.encode()).raise_for_status()
        new_index(
            c,
            {"name": INDEX, "dim": dim, "partitions": parts, "dataset": DATASET, "id_column": "id"},
        )
        asyncio.run(publish(stack.nats_url, INDEX, data, parts))
        wait_count(c, INDEX, n, timeout=36_000)


def search_all(
    lean: Lean, queries: np.ndarray, cut: int, k: int = 10
) -> tuple[list[float], list[list[int]], list[dict[str, Any]]]:
    """Milliseconds, row numbers found and the replies, per query, for ``bucket < cut``."""
    ms_all, found, replies = [], [], []
    for q in queries:
        ms, got = timed_post(
            lean,
            f"/v1/vectors/indexes/{INDEX}/search",
            {"vector": q.tolist(), "k": k, "filter": f"bucket < {cut}", "fields": []},
        )
        ms_all.append(ms)
        found.append([int(h["id"][1:]) for h in got["hits"]])
        replies.append(got)
    return ms_all, found, replies


def filtered(stack: Stack, n: int, dim: int, queries_each: int = 200, parts: int = 4) -> list[Row]:
    k = 10
    data, queries, bucket = data_for(n, dim, queries_each)
    keeps = [bucket < cut for _, cut in SELECTIVITIES]
    raws = raw_filtered(data, queries, keeps, k)
    load(stack, data, bucket, parts)
    out: list[Row] = []
    lean = Lean(stack.base)
    try:
        for i, ((label, cut), keep, (raw_ms, raw_found)) in enumerate(
            zip(SELECTIVITIES, keeps, raws, strict=True)
        ):
            subset = np.flatnonzero(keep)
            truth, scan_ms = [], []
            for q in queries:
                t = time.perf_counter()
                truth.append(exact_filtered(data, subset, q, k))
                scan_ms.append((time.perf_counter() - t) * 1000)
            ours_ms, found, replies = search_all(lean, queries, cut, k)
            for got in replies:
                if got["filter_matches"] != subset.size:
                    raise RuntimeError(f"{label}: filter matched {got['filter_matches']}")
            filter_ms = [got["filter_ms"] for got in replies]
            truth_arr = np.array([np.pad(t, (0, k - t.size), constant_values=-1) for t in truth])
            ours_recall = recall(found, truth_arr)
            if ours_recall < 0.95:
                raise RuntimeError(f"filtered {label}: recall@10 {ours_recall:.3f} < 0.95")
            cold, warm = ours_ms[0], ours_ms[1:]
            first = "the stack's first filtered query" if i == 0 else "filter not yet cached"
            out += [
                Row(
                    f"filtered {label} search p50 (ms)",
                    statistics.median(warm),
                    statistics.median(raw_ms),
                    "ms",
                    "",
                    f"{subset.size:,} ids; p95 {p(warm, 0.95):.2f} vs {p(raw_ms, 0.95):.2f} ms; "
                    f"first query {cold:.1f} ms ({first}); "
                    f"filter p50 {statistics.median(filter_ms):.2f} ms; "
                    "floor: raw hnswlib + filter callback",
                ),
                Row(
                    f"filtered {label} search vs numpy scan p50 (ms)",
                    statistics.median(warm),
                    statistics.median(scan_ms),
                    "ms",
                    "",
                    "floor: exact numpy scan of the subset's vectors, row numbers given",
                ),
                Row(
                    f"filtered {label} recall@10",
                    ours_recall,
                    recall(raw_found, truth_arr),
                    "",
                    "",
                    "vs exact filtered top-10; floor: raw hnswlib + filter callback, ef 64",
                ),
            ]
        # The same path without a filter: what a filtered search cannot go below; then with
        # each hit's row (the default): what the rows add.
        path = f"/v1/vectors/indexes/{INDEX}/search"
        plain = [
            timed_post(lean, path, {"vector": q.tolist(), "k": k, "fields": []})[0] for q in queries
        ]
        with_rows = [timed_post(lean, path, {"vector": q.tolist(), "k": k}) for q in queries]
        rows_ms = [got["rows_ms"] for _, got in with_rows[1:]]
        out.append(
            Row(
                "filtered index: unfiltered search p50 (ms)",
                statistics.median(plain[1:]),
                None,
                "ms",
                "",
                f"p95 {p(plain[1:], 0.95):.2f} ms; the fixed HTTP → gateway → NATS → worker path",
            )
        )
        out.append(
            Row(
                "search with each hit's row, k=10, p50 (ms)",
                statistics.median(ms for ms, _ in with_rows[1:]),
                statistics.median(plain[1:]),
                "ms",
                "",
                f"rows_ms p50 {statistics.median(rows_ms):.2f} ms, first "
                f"{with_rows[0][1]['rows_ms']:.1f} ms (the dataset loaded into the query "
                "worker); floor: the same search without rows",
            )
        )
    finally:
        lean.close()
    return out
