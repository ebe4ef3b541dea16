"""The benchmark's workloads. Each returns rows: ours, the floor measured in the same run,
and the seed's figure for context. Correctness (counts, recall) is checked, never timing."""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import nats
import nats.js.errors
import numpy as np
import psutil
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lakehouse.devtools.bench.data import clustered, exact_topk, recall
from lakehouse.devtools.bench.rss import PeakRss
from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from lakehouse.vectors import batches

MiB = 1 << 20


@dataclass
class Row:
    workload: str
    ours: float
    floor: float | None
    unit: str
    seed: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.floor else self.ours / self.floor


class Lean:
    """A keep-alive ``http.client`` connection for the latency loops: httpx spends ~1.3 ms of
    its own per request, which would be charged to the gateway."""

    def __init__(self, base: str) -> None:
        host, _, port = base.split("//", 1)[1].partition(":")
        self.conn = http.client.HTTPConnection(host, int(port or 80), timeout=120)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        self.conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        r = self.conn.getresponse()
        return r.status, json.loads(r.read())

    def close(self) -> None:
        self.conn.close()


def timed_post(lean: Lean, path: str, body: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    status, out = lean.post(path, body)
    ms = (time.perf_counter() - t) * 1000
    if status != 200:
        raise RuntimeError(f"POST {path} -> {status}: {out}")
    return ms, out


def p(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


def timed(fn: Any, *args: Any) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def ingest(stack: Stack, csv: Path, rows: int, work: Path) -> tuple[list[Row], Path]:
    def duck() -> None:
        con = duckdb.connect()
        types = "{'hourly_rate': 'VARCHAR', 'years_experience': 'VARCHAR'}"
        con.execute(
            f"COPY (SELECT * FROM read_csv('{csv}', types={types})) TO '{work}/duck.parquet'"
            " (FORMAT parquet, COMPRESSION zstd)"
        )
        con.close()

    def arrow() -> None:
        table = pacsv.read_csv(csv, parse_options=pacsv.ParseOptions(newlines_in_values=True))
        pq.write_table(table, work / "arrow.parquet", compression="zstd")

    duck_s, arrow_s = timed(duck), timed(arrow)
    with PeakRss(stack.pids("ingest")) as worker_rss, PeakRss(stack.pids("gateway")) as gw_rss:
        t = time.perf_counter()
        with csv.open("rb") as fh, httpx.Client(timeout=3600) as c:
            r = c.post(f"{stack.base}/v1/ingest?name=workers&wait=3600", content=fh)
        ours = time.perf_counter() - t
    r.raise_for_status()
    result = r.json()
    assert result["row_count"] == rows, result
    parquet = stack.root / "data" / "objects" / result["key"]
    return [
        Row(
            "ingest: CSV → registered dataset (s)",
            ours,
            duck_s,
            "s",
            "3.12 s (500K)",
            "floor: DuckDB COPY",
        ),
        Row("ingest vs pyarrow read_csv + write_table (s)", ours, arrow_s, "s"),
        Row("ingest worker peak RSS (MiB)", worker_rss.peak / MiB, None, "MiB", "209 MiB"),
        Row("gateway peak RSS during ingest (MiB)", gw_rss.peak / MiB, None, "MiB"),
        Row(
            "Parquet bytes (MiB)",
            parquet.stat().st_size / MiB,
            (work / "duck.parquet").stat().st_size / MiB,
            "MiB",
            "71 MiB",
            "floor: DuckDB's zstd file",
        ),
    ], parquet


SQL = [
    ("count(*)", "SELECT count(*) FROM workers"),
    ("ORDER BY id LIMIT 5", "SELECT * FROM workers ORDER BY worker_id LIMIT 5"),
    (
        "GROUP BY state top 10",
        "SELECT state, count(*) AS n FROM workers GROUP BY state ORDER BY n DESC LIMIT 10",
    ),
    (
        "avg/min/max reliability",
        "SELECT round(avg(reliability), 4), min(reliability), max(reliability) FROM workers",
    ),
    (
        "IL and reliability > 0.8",
        "SELECT count(*) FROM workers WHERE state = 'IL' AND reliability > 0.8",
    ),
    (
        "column listing",
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'workers'",
    ),
]


def sql(stack: Stack, parquet: Path, rows: int, runs: int) -> list[Row]:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW workers AS SELECT * FROM read_parquet('{parquet}')")
    out = []
    lean = Lean(stack.base)
    try:
        for label, query in SQL:
            ours, floor = [], []
            for i in range(runs + 5):
                ms, got = timed_post(lean, "/v1/sql", {"sql": query})
                if i >= 5:
                    ours.append(ms)
                t = time.perf_counter()
                expected = con.execute(query).fetchall()
                if i >= 5:
                    floor.append((time.perf_counter() - t) * 1000)
            if label == "count(*)":
                assert got["rows"] == [[rows]] == [list(expected[0])], got
            out.append(
                Row(
                    f"SQL {label} p50 (ms)",
                    statistics.median(ours),
                    statistics.median(floor),
                    "ms",
                    "24–56 ms",
                    f"p95 {p(ours, 0.95):.1f} vs {p(floor, 0.95):.1f} ms",
                )
            )
    finally:
        lean.close()
    return out


async def publish(url: str, index: str, data: np.ndarray, parts: int, window: int = 16) -> None:
    """Publish ``data`` as binary batches of 500 (ids ``v0``, ``v1``, ...), the upstream way."""
    nc = await nats.connect(url)
    try:
        ids = [f"v{i}" for i in range(len(data))]
        encoded = batches.batches(ids, data, dim=data.shape[1], partitions=parts, max_rows=500)
        await batches.publish(nc.jetstream(), index, encoded, window=window)
    finally:
        await nc.close()


def index_count(c: httpx.Client, index: str) -> int:
    """The vectors ``index`` holds now, as its stats report them (0 while it has none)."""
    return int(c.get(f"/v1/vectors/indexes/{index}").json().get("count", 0))


def wait_count(c: httpx.Client, index: str, n: int, timeout: float) -> None:
    """Until ``index`` holds at least ``n`` vectors (bounded by ``timeout``)."""
    wait_until(
        lambda: index_count(c, index) >= n,
        timeout=timeout,
        interval=0.2,
        what=f"index {index} to reach {n} vectors",
    )


def new_index(c: httpx.Client, spec: dict[str, Any], timeout: float = 60) -> None:
    """Create the vector index ``spec`` and wait until every partition has an owner."""
    c.post("/v1/vectors/indexes", json=spec).raise_for_status()
    url = f"/v1/vectors/indexes/{spec['name']}"
    wait_until(
        lambda: not c.get(url).json()["missing_partitions"],
        timeout=timeout,
        interval=0.1,
        what=f"index {spec['name']}'s partitions",
    )


def raw_index(data: np.ndarray) -> Any:
    """One raw hnswlib graph of ``data`` (cosine, M 16, ef_construction 200, built on all
    cores, ef 64): the floor the vector workloads compare with."""
    import hnswlib

    n, dim = data.shape
    raw = hnswlib.Index(space="cosine", dim=dim)
    raw.init_index(max_elements=n, M=16, ef_construction=200)
    raw.add_items(data, np.arange(n), num_threads=psutil.cpu_count())
    raw.set_ef(64)
    return raw


def raw_floor(
    data: np.ndarray, queries: np.ndarray, k: int = 10
) -> tuple[float, list[float], list[list[int]]]:
    """Raw hnswlib on the same vectors: add_items on all cores (M 16, ef_construction 200)
    in seconds, then knn_query (ef 64) per query: milliseconds and the labels found."""
    t = time.perf_counter()
    raw = raw_index(data)
    seconds = time.perf_counter() - t
    ms, found = [], []
    for q in queries:
        t = time.perf_counter()
        labels, _ = raw.knn_query(q.reshape(1, -1), k=k)
        ms.append((time.perf_counter() - t) * 1000)
        found.append(labels[0].tolist())
    return seconds, ms, found


def vectors(stack: Stack, n: int, dim: int, parts: int = 4) -> list[Row]:
    data = clustered(n, dim, centers=max(50, n // 200), noise=0.5)
    queries = clustered(200, dim, centers=max(50, n // 200), noise=0.5, sample=99)
    truth = exact_topk(data, queries, 10)
    raw_s, raw_ms, raw_found = raw_floor(data, queries)
    with httpx.Client(base_url=stack.base, timeout=60) as c:
        new_index(c, {"name": "bench", "dim": dim, "partitions": parts})
        t = time.perf_counter()
        asyncio.run(publish(stack.nats_url, "bench", data, parts))
        wait_count(c, "bench", n, timeout=36_000)
        load_s = time.perf_counter() - t
        ours_ms, found = [], []
        lean = Lean(stack.base)
        for i, q in enumerate([*queries[:20], *queries]):
            ms, got = timed_post(
                lean, "/v1/vectors/indexes/bench/search", {"vector": q.tolist(), "k": 10}
            )
            if i >= 20:
                ours_ms.append(ms)
                found.append([int(h["id"][1:]) for h in got["hits"]])
        lean.close()
    rss = PeakRss(stack.pids("vectors")).current()
    ours_recall = recall(found, truth)
    assert ours_recall >= 0.9, ours_recall
    formula = n * (dim * 4 + 16 * 2 * 4 + 12)
    return [
        Row(
            "vector load (vectors/s)",
            n / load_s,
            n / raw_s,
            "vec/s",
            "~234 vec/s (768-d)",
            "floor: raw hnswlib add_items, all cores",
        ),
        Row(
            "search p50 (ms)",
            statistics.median(ours_ms),
            statistics.median(raw_ms),
            "ms",
            "1–3 ms",
            f"p99 {p(ours_ms, 0.99):.2f} vs {p(raw_ms, 0.99):.2f} ms",
        ),
        Row(
            "recall@10 vs brute force",
            ours_recall,
            recall(raw_found, truth),
            "",
            "",
            "floor: raw hnswlib ef 64",
        ),
        Row(
            "vector worker RSS per vector (B)",
            rss / n,
            formula / n,
            "B",
            "~9 KB",
            "floor: hnswlib's own formula",
        ),
    ]


@contextmanager
def extra_workers(
    stack: Stack, kinds: tuple[str, ...], ready: Callable[[], bool]
) -> Iterator[float]:
    """A second replica of each of ``kinds`` while in the block, started together (their
    start-ups overlap); ``ready``: when they serve. Yields the seconds that took."""
    names = [f"{kind}-concurrency" for kind in kinds]
    started = time.perf_counter()
    procs = [stack.spawn(name, "worker", kind) for name, kind in zip(names, kinds, strict=True)]
    try:
        wait_until(ready, timeout=180, interval=0.2, what=f"second {'/'.join(kinds)} workers")
        yield time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        for name, proc in zip(names, procs, strict=True):
            proc.stop()
            stack.procs.pop(name, None)
