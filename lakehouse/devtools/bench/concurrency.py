"""The ``concurrency`` workload: throughput and latency under C concurrent clients.

On one stack (one process per worker kind) it loads a vector index of clustered 384-d
vectors the upstream way and ingests a staffing dataset, then for each C in ``size.clients``
runs C closed-loop clients for ``size.seconds``: vector search through the gateway (k 10,
ef 64) and SQL through the gateway, each next to its floor from C threads in the same run —
raw hnswlib ``knn_query`` on one graph of the same vectors, and DuckDB in process on the same
Parquet file. Then, at 8 clients, search while more vectors load (``under_load``), and 1
against 2 query workers (SQL) and 1 against 2 vector workers (search; the index's partitions
split between them by lease).

Clients are threads (``closedloop``), each with its own keep-alive ``http.client`` connection and
request bodies encoded once: they cost ~0.45 ms of client CPU per request where an
``httpx.AsyncClient`` cost 3-7.5 ms (docs/SCALING.md), and the client shares the machine's
cores with the stack. While each of our points runs, the CPU of every process (gateway, each
worker, nats-server, the supervisor, the clients, and the rest of the machine as ``not ours``)
is taken from ``psutil`` and reported in the row's note, as % of one core. The vector worker's
RSS growth over the load is reported per vector.

Correctness is checked, timings never are: every search reply has k hits and is not partial,
recall@10 on a sample of the queries (against exact top-k by numpy) is at least 0.9 at every
point; every SQL reply equals DuckDB's answer to the same query.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import psutil

from lakehouse.devtools.bench.closedloop import (
    Call,
    Client,
    Point,
    cpu_note,
    cpu_of,
    drive,
    processes,
)
from lakehouse.devtools.bench.data import clustered, exact_topk, recall
from lakehouse.devtools.bench.under_load import search_under_load
from lakehouse.devtools.bench.workloads import (
    Row,
    extra_workers,
    new_index,
    p,
    publish,
    raw_index,
    wait_count,
)
from lakehouse.devtools.datagen import generate
from lakehouse.devtools.stack import Stack

INDEX, DATASET = "bench_conc", "bench_conc_rows"
SEARCH = f"/v1/vectors/indexes/{INDEX}/search"
K, EF = 10, 64
SCALE_CLIENTS = 8  # the 1-vs-2-workers points


@dataclass(frozen=True)
class Size:
    vectors: int
    rows: int  # of the SQL dataset
    seconds: float  # per measured point
    clients: tuple[int, ...]
    dim: int = 384
    queries: int = 200  # distinct query vectors, cycled
    sample: int = 50  # the first ``sample`` queries are checked for recall
    partitions: int = 4
    load: int = 5_000  # vectors loaded into a second index during the under-load point


QUICK = Size(vectors=5_000, rows=5_000, seconds=0.5, clients=(1, 8))
FULL = Size(vectors=200_000, rows=100_000, seconds=10.0, clients=(1, 8, 32), load=100_000)

SQL = (
    "SELECT count(*) FROM {t}",
    "SELECT state, count(*) AS n FROM {t} GROUP BY state ORDER BY n DESC, state LIMIT 10",
    "SELECT count(*) FROM {t} WHERE state = 'IL' AND reliability > 0.8",
)


# ---- the two kinds of request ---------------------------------------------------------------


@dataclass
class Vectors:
    """The index's vectors, the queries (request bodies encoded once) and the sample's
    exact top-k."""

    data: np.ndarray
    queries: np.ndarray
    bodies: list[bytes]
    truth: np.ndarray

    @classmethod
    def make(cls, size: Size) -> Vectors:
        centers = max(50, size.vectors // 200)
        data = clustered(size.vectors, size.dim, centers=centers, noise=0.5, seed=31)
        queries = clustered(size.queries, size.dim, centers=centers, noise=0.5, seed=31, sample=3)
        bodies = [
            json.dumps({"vector": q.tolist(), "k": K, "ef": EF, "fields": []}).encode()
            for q in queries
        ]
        return cls(data, queries, bodies, exact_topk(data, queries[: size.sample], K))

    def recall(self, found: dict[int, list[int]]) -> float:
        seen = sorted(found)
        if len(seen) < min(10, len(self.truth)):
            raise RuntimeError(f"only {len(seen)} sampled queries answered")
        return recall([found[i] for i in seen], self.truth[seen])


def ours_search(
    base: str, vec: Vectors, found: dict[int, list[int]], took: list[tuple[float, list[float]]]
) -> Callable[[], Call]:
    """Search through the gateway; ``found``: the hits of each sampled query's first answer;
    ``took``: for those answers, the gateway's ``took_ms`` and then each partition's
    ``took_ms`` (its search in the vector worker)."""
    n = len(vec.bodies)

    def make() -> Call:
        client = Client(base)

        def call(i: int) -> None:
            q = i % n
            got = client.send(SEARCH, vec.bodies[q])
            hits = got["hits"]
            if len(hits) != K or got["partial"]:
                raise RuntimeError(f"search: {len(hits)} hits, partial {got['partial']}")
            if q < len(vec.truth) and q not in found:
                found[q] = [int(h["id"][1:]) for h in hits]
                took.append((got["took_ms"], [part["took_ms"] for part in got["partitions"]]))

        return call

    return make


def raw_search(raw: Any, vec: Vectors, found: dict[int, list[int]]) -> Callable[[], Call]:
    n = len(vec.queries)
    rows = [vec.queries[i : i + 1] for i in range(n)]

    def make() -> Call:
        def call(i: int) -> None:
            q = i % n
            labels, _ = raw.knn_query(rows[q], k=K, num_threads=1)
            if q < len(vec.truth) and q not in found:
                found[q] = labels[0].tolist()

        return call

    return make


def ours_sql(base: str, queries: list[tuple[bytes, list[list[Any]]]]) -> Callable[[], Call]:
    def make() -> Call:
        client = Client(base)

        def call(i: int) -> None:
            body, want = queries[i % len(queries)]
            got = client.send("/v1/sql", body)
            if got["rows"] != want:
                raise RuntimeError(f"SQL {body!r}: {got['rows']} != {want}")

        return call

    return make


def duck_sql(con: duckdb.DuckDBPyConnection, queries: list[tuple[str, Any]]) -> Callable[[], Call]:
    lock = threading.Lock()  # cursor() on one connection from many threads

    def make() -> Call:
        with lock:
            cur = con.cursor()

        def call(i: int) -> None:
            sql, want = queries[i % len(queries)]
            if cur.execute(sql).fetchall() != want:
                raise RuntimeError(f"DuckDB {sql}: wrong answer")

        return call

    return make


# ---- the stack -----------------------------------------------------------------------------


def load(stack: Stack, vec: Vectors, size: Size, work: Path) -> Path:
    """The index (loaded as an upstream system does) and the SQL dataset; the dataset's
    Parquet file."""
    csv = work / "concurrency.csv"
    generate(csv, size.rows, seed=17)
    with httpx.Client(base_url=stack.base, timeout=600) as c:
        r = c.post(f"/v1/ingest?name={DATASET}&wait=600", content=csv.read_bytes())
        r.raise_for_status()
        if r.json()["row_count"] != size.rows:
            raise RuntimeError(f"ingest: {r.json()}")
        new_index(c, {"name": INDEX, "dim": size.dim, "partitions": size.partitions})
        asyncio.run(publish(stack.nats_url, INDEX, vec.data, size.partitions))
        wait_count(c, INDEX, size.vectors, timeout=36_000)
    return stack.root / "data" / "objects" / r.json()["key"]


def owners(stack: Stack, count: int) -> set[str] | None:
    """Distinct owners of the index's partitions once every partition answers and they
    hold ``count`` vectors; None before."""
    body = httpx.get(f"{stack.base}/v1/vectors/indexes/{INDEX}", timeout=30).json()
    if body["missing_partitions"] or body["count"] != count:
        return None
    return {str(part["owner"]) for part in body["partitions_detail"]}


# ---- the workload --------------------------------------------------------------------------


def point_rows(what: str, ours: Point, floor: Point, floor_name: str) -> list[Row]:
    """QPS, p50 and p99 of one point, ours against the floor."""
    return [
        Row(
            f"concurrency: {what} QPS",
            ours.qps,
            floor.qps,
            "req/s",
            note=f"floor: {floor_name}; {cpu_note(ours.cpu)}{ours.detail}",
        ),
        Row(f"concurrency: {what} p50 (ms)", ours.p50, floor.p50, "ms"),
        Row(f"concurrency: {what} p99 (ms)", ours.p99, floor.p99, "ms"),
    ]


def concurrency(stack: Stack, size: Size, work: Path) -> list[Row]:
    vec = Vectors.make(size)
    raw = raw_index(vec.data)
    rss_before = vectors_rss(stack)
    parquet = load(stack, vec, size, work)
    rss_per_vector = (vectors_rss(stack) - rss_before) / size.vectors
    con = duckdb.connect()
    con.execute(f"CREATE VIEW {DATASET} AS SELECT * FROM read_parquet('{parquet}')")
    sqls = [q.format(t=DATASET) for q in SQL]
    expected = [con.execute(q).fetchall() for q in sqls]
    if expected[0] != [(size.rows,)]:
        raise RuntimeError(f"DuckDB count: {expected[0]}")
    http_sql = [
        (json.dumps({"sql": q}).encode(), json.loads(json.dumps([list(r) for r in e])))
        for q, e in zip(sqls, expected, strict=True)
    ]
    duck_queries = list(zip(sqls, expected, strict=True))
    recalls: dict[str, float] = {}  # "ours ..." / "raw ...": recall@10 of the sample

    procs = processes(stack)  # /health takes half a second: once per set of processes

    def ours(kind: str, clients: int, what: str) -> Point:
        found: dict[int, list[int]] = {}
        took: list[tuple[float, list[float]]] = []
        if kind == "search":
            make = ours_search(stack.base, vec, found, took)
        else:
            make = ours_sql(stack.base, http_sql)
        cpu: dict[str, float] = {}
        with cpu_of(procs, cpu):
            point = drive(clients, size.seconds, make)
        point.cpu = cpu
        if kind == "search":
            recalls[f"ours {what}"] = checked(vec.recall(found), what)
            gateway, parts = [t for t, _ in took], [t for _, each in took for t in each]
            point.detail = (
                f"; in the gateway p50 {p(gateway, 0.5):.2f} ms, a partition's search in the "
                f"vector worker p50 {p(parts, 0.5):.2f} ms (sampled queries)"
            )
        return point

    def floor(kind: str, clients: int, what: str) -> Point:
        if kind == "sql":
            return drive(clients, size.seconds, duck_sql(con, duck_queries))
        found: dict[int, list[int]] = {}
        point = drive(clients, size.seconds, raw_search(raw, vec, found))
        recalls[f"raw {what}"] = vec.recall(found)
        return point

    out: list[Row] = []
    label = {"search": "vector search", "sql": "SQL"}
    floor_name = {"search": "raw hnswlib knn_query", "sql": "DuckDB in process"}
    for kind in ("search", "sql"):
        for clients in size.clients:
            what = f"{label[kind]}, {clients} client{'' if clients == 1 else 's'}"
            mine, base = ours(kind, clients, what), floor(kind, clients, what)
            out += point_rows(what, mine, base, floor_name[kind])

    out += search_under_load(
        stack, size, lambda what: ours("search", SCALE_CLIENTS, what), SCALE_CLIENTS
    )

    # 1 against 2 replicas at SCALE_CLIENTS clients: the 1-replica points again (so both
    # sides see the same moment of a shared machine), then a second query worker and a second
    # vector worker together (the index's partitions split between the two by lease; an idle
    # worker of the other kind costs nothing measurable).
    def ready() -> bool:
        seen = owners(stack, size.vectors)
        return stack.healthy({"query": 2, "vectors": 2}) and seen is not None and len(seen) == 2

    kinds = (("sql", "query"), ("search", "vectors"))
    at = {kind: f"{label[kind]}, {SCALE_CLIENTS} clients" for kind, _ in kinds}
    one = {kind: ours(kind, SCALE_CLIENTS, f"{at[kind]}, 1 {w} worker") for kind, w in kinds}
    with extra_workers(stack, ("query", "vectors"), ready) as handoff:
        procs = processes(stack)
        two = {kind: ours(kind, SCALE_CLIENTS, f"{at[kind]}, 2 {w} workers") for kind, w in kinds}
        # Gone before the second vector worker stops: no partitions to hand back.
        httpx.delete(f"{stack.base}/v1/vectors/indexes/{INDEX}", timeout=60).raise_for_status()
    httpx.delete(f"{stack.base}/v1/catalog/{DATASET}", timeout=60).raise_for_status()
    for kind, worker in kinds:
        a, b = one[kind], two[kind]
        out.append(
            Row(
                f"concurrency: {at[kind]}, 2 {worker} workers, QPS",
                b.qps,
                a.qps,
                "req/s",
                note=f"floor: 1 {worker} worker, measured just before; p50 {b.p50:.2f} vs "
                f"{a.p50:.2f} ms, p99 {b.p99:.2f} vs {a.p99:.2f} ms; 2 workers: "
                f"{cpu_note(b.cpu)}; 1 worker: {cpu_note(a.cpu)}"
                + (
                    f"; the second worker served {handoff:.1f} s after its start (the "
                    "partitions' hand-over included)"
                    if worker == "vectors"
                    else ""
                ),
            )
        )
    out.append(
        Row(
            "concurrency: search recall@10, lowest of any point",
            min(v for k, v in recalls.items() if k.startswith("ours")),
            min(v for k, v in recalls.items() if k.startswith("raw")),
            "recall@10",  # the unit tells `bench --compare` that higher is better
            note=f"first {size.sample} queries vs exact top-{K}; floor: raw hnswlib, ef {EF}",
        )
    )
    out.append(
        Row(
            "concurrency: vector worker RSS per vector (B)",
            rss_per_vector,
            size.dim * 4 + 16 * 2 * 4 + 12,
            "B",
            note=f"RSS growth over the load of {size.vectors:,}×{size.dim}; "
            "floor: hnswlib's own formula",
        )
    )
    con.close()
    return out


def vectors_rss(stack: Stack) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in stack.pids("vectors"))


def checked(value: float, what: str) -> float:
    if value < 0.9:
        raise RuntimeError(f"{what}: recall@10 {value:.3f} < 0.9")
    return value
