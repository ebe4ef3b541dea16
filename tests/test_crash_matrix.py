"""The crash matrix: real processes, real NATS (and SeaweedFS for the storage row). Each row
runs a workload, injects its fault at a seeded random point, recovers, and then checks: the
expected state computed independently (DuckDB on the input CSV, the id list itself), `lakehouse
verify` (log-rebuilt == live) with that expectation, no orphan objects after `lakehouse gc`,
every worker healthy, revision histories intact. Time to recover is printed in pytest's
summary. CI sizes are bounded; ``pytest --full tests/test_crash_matrix*.py`` runs the issue's
sizes (200K rows, 100K vectors, 20K texts). The vector, embed and gateway rows are in
``test_crash_matrix_vectors.py`` (one file per pytest process of ``make test``)."""

from __future__ import annotations

import asyncio
import csv as csvlib
import json
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx
import nats
import pytest

from lakehouse.devtools.bench.data import clustered
from lakehouse.devtools.datagen import generate
from lakehouse.devtools.servers import SeaweedS3, wait_until
from lakehouse.devtools.stack import Stack
from lakehouse.ops.verify import CHECKSUM_SQL, expected_index_digest
from lakehouse.platform.config import merged
from lakehouse.tables.views import DUCK_TYPES
from lakehouse.vectors import batches
from tests.support.recovery import record
from tests.support.stacklike import StackLike

pytestmark = pytest.mark.slow

SEED = 20261126
DIM, PARTS = 32, 4


def sizes(full: bool) -> dict[str, int]:
    if full:
        return {"rows": 200_000, "vectors": 100_000, "texts": 20_000, "concurrent_rows": 20_000}
    return {"rows": 20_000, "vectors": 20_000, "texts": 300, "concurrent_rows": 1_000}


# ---- helpers ------------------------------------------------------------------------
def make_stack(root: Path, kinds: tuple[str, ...], **kw: Any) -> Stack:
    overrides = merged(
        {
            "catalog": {"gc_grace": 0.0},
            "vectors": {"snapshot_every": 1.0, "snapshot_min_changes": 2000, "lease_ttl": 3.0},
        },
        kw.pop("overrides", {}),
    )
    return Stack(root / "stack", overrides=overrides, **kw).start(kinds)


def post_ingest(stack: StackLike, name: str, csv: Path, params: str = "") -> str:
    with stack.client() as c, csv.open("rb") as fh:
        r = c.post(f"/v1/ingest?name={name}&wait=0{params}", content=fh)
    assert r.status_code in (200, 202), r.text
    return str(r.json()["job_id"])


def job_state(stack: StackLike, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{stack.base}/v1/jobs/{job_id}", timeout=10)
    return r.json() if r.status_code == 200 else {"state": "unknown"}  # type: ignore[no-any-return]


def wait_job(stack: StackLike, job_id: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        s = job_state(stack, job_id)
        return s if s["state"] in ("succeeded", "failed") else None

    state: dict[str, Any] = wait_until(done, timeout=timeout, interval=0.1, what="job to end")
    assert state["state"] == "succeeded", state
    return state


def csv_truth(csv: Path) -> tuple[int, int]:
    with duckdb.connect() as db:
        got = db.execute(
            f"SELECT count(*), sum(worker_id) FROM read_csv('{csv}', header=true)"
        ).fetchone()
    assert got is not None
    return int(got[0]), int(got[1])


def sql(stack: StackLike, query: str) -> list[list[Any]]:
    r = httpx.post(f"{stack.base}/v1/sql", json={"sql": query}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["rows"]  # type: ignore[no-any-return]


def check_dataset(stack: StackLike, name: str, csv: Path) -> None:
    """No row lost, none duplicated: count, distinct ids and the id sum match the input."""
    rows, id_sum = csv_truth(csv)
    got = sql(stack, f"SELECT count(*), count(DISTINCT worker_id), sum(worker_id) FROM {name}")
    assert got == [[rows, rows, id_sum]]


def verify(stack: StackLike, tmp: Path, expect: dict[str, Any]) -> dict[str, Any]:
    path = tmp / "expect.json"
    path.write_text(json.dumps(expect))
    report: dict[str, Any] = json.loads(stack.cli("verify", "--json", "--expect", str(path)))
    assert report["ok"], report["diffs"]
    return report


def object_keys(manifest: dict[str, Any]) -> set[str]:
    return {o["key"] for o in [*manifest["objects"], *manifest.get("deletes", [])]}


def history(stack: StackLike, name: str) -> list[dict[str, Any]]:
    with stack.client() as c:
        r = c.get(f"/v1/catalog/{name}/history")
    assert r.status_code == 200, r.text
    return r.json()["events"]  # type: ignore[no-any-return]


def no_orphans(stack: StackLike) -> None:
    """After gc, every data object and delete set of a current manifest is stored, nothing
    is stored that no retained revision (each dataset's last ``catalog.keep_revisions``, kept
    for time travel) references, and staging is empty."""
    stack.cli("gc", "--grace", "0")
    keep = stack.settings.catalog.keep_revisions
    with stack.client() as c:
        stored = {
            o["key"]
            for prefix in ("datasets/", "staging/")
            for o in c.get("/v1/storage", params={"prefix": prefix}).json()["objects"]
        }
        current = c.get("/v1/catalog").json()["datasets"]
    live = set().union(*(object_keys(d) for d in current))
    retained = set(live)
    for d in current:
        life: list[dict[str, Any]] = []  # the revisions since the dataset's last delete
        for e in history(stack, d["name"]):
            life = [] if e["type"] == "deleted" else [*life, e["manifest"]]
        retained |= set().union(*(object_keys(m) for m in life[-keep:]))
    assert live <= stored, f"gc removed objects in use: {sorted(live - stored)}"
    assert stored <= retained, f"orphans left after gc: {sorted(stored - retained)}"


def dataset_recovered(
    stack: StackLike, tmp: Path, name: str, csv: Path, *, exact: bool = False
) -> dict[str, Any]:
    """The checks every ingest row ends with (``exact``: verify's content checksum too);
    returns verify's report."""
    check_dataset(stack, name, csv)
    want = csv_expectation(stack, name, csv) if exact else {"row_count": csv_truth(csv)[0]}
    report = verify(stack, tmp, {"datasets": {name: want}})
    no_orphans(stack)
    check_dataset(stack, name, csv)  # gc took nothing the dataset still reads
    assert stack.healthy()
    return report


def csv_expectation(stack: StackLike, name: str, csv: Path) -> dict[str, Any]:
    """Row count and verify's content checksum of ``csv`` computed by DuckDB from the file,
    each cell typed as the dataset's column (the converter's rule: an empty cell is '' in a
    string column, null in the others)."""
    with stack.client() as c:
        columns = c.get(f"/v1/catalog/{name}").json()["columns"]
    cells = ", ".join(
        f"coalesce({q}, '') AS {q}"
        if col["type"] == "string"
        else f"CAST({q} AS {DUCK_TYPES[col['type']]}) AS {q}"
        for col in columns
        for q in ['"' + col["name"] + '"']
    )
    src = f"(SELECT {cells} FROM read_csv('{csv}', header = true, all_varchar = true))"
    with duckdb.connect() as db:
        got = db.execute(CHECKSUM_SQL.format(src=src)).fetchone()
    assert got is not None
    return {"row_count": int(got[0]), "checksum": str(got[1])}


UPSERT = "&mode=upsert&key=worker_id&delete_missing=true&schema=evolve"
NO_FAULTS = {"LAKEHOUSE_FAULTS": "{}"}  # a process of a stack with fault points, without them


def next_export(src: Path, dst: Path) -> dict[str, int]:
    """The next export of ``src`` (worker ids 1..n): every 20th worker renamed, every 50th
    gone (disjoint strides), 1% new (copies of the first rows under new ids). Returns the
    counts an upsert of it with ``delete_missing`` makes."""
    with src.open(newline="") as fh:
        header, *rows = list(csvlib.reader(fh))
    wid, name = header.index("worker_id"), header.index("name")
    top = max(int(r[wid]) for r in rows)
    kept, updated, deleted = [], 0, 0
    for r in rows:
        i = int(r[wid])
        if i % 50 == 3:
            deleted += 1
            continue
        if i % 20 == 1:
            r = [*r[:name], r[name] + " Jr.", *r[name + 1 :]]
            updated += 1
        kept.append(r)
    new = [
        [*r[:wid], str(top + 1 + k), *r[wid + 1 :]] for k, r in enumerate(rows[: len(rows) // 100])
    ]
    with dst.open("w", newline="") as fh:
        csvlib.writer(fh, lineterminator="\n").writerows([header, *kept, *new])
    return {"inserted": len(new), "updated": updated, "deleted": deleted}


def expect_vectors(name: str, ids: list[str]) -> dict[str, Any]:
    parts: dict[int, list[str]] = {p: [] for p in range(PARTS)}
    for i in ids:
        parts[batches.partition_of(i, PARTS)].append(i)
    return {"indexes": {name: {"count": len(ids), "digest": expected_index_digest(parts)}}}


def create_index(stack: StackLike, name: str, dim: int = DIM) -> None:
    r = httpx.post(
        f"{stack.base}/v1/vectors/indexes",
        json={"name": name, "dim": dim, "partitions": PARTS},
        timeout=10,
    )
    assert r.status_code == 201, r.text


def index_count(stack: StackLike, name: str) -> int:
    """Live vectors in the index; -1 while a partition has no owner or the gateway is away."""
    try:
        r = httpx.get(f"{stack.base}/v1/vectors/indexes/{name}", timeout=10).json()
        return int(r["count"]) if not r["missing_partitions"] else -1
    except (httpx.HTTPError, KeyError, ValueError):
        return -1


@dataclass
class Gate:
    """Holds a loader once ``at`` vectors are published, until the fault is injected: the
    fault then lands mid-load for certain, however fast the worker applies."""

    at: int
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


async def publish_vectors(
    url: str, name: str, n: int, gate: Gate | None = None, batch: int = 500
) -> None:
    """Publish n clustered vectors, retrying each batch through outages (a restarted
    nats-server); the batch's Nats-Msg-Id makes a retried batch land once."""
    data = clustered(n, DIM, centers=100)
    # Every node of a cluster's comma-separated URL; pings every second: a client on a node
    # cut off by a partition moves to another within seconds (nats-py's default: 2 min).
    nc = await nats.connect(
        [u.strip() for u in url.split(",")],
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
        ping_interval=1,
        max_outstanding_pings=2,
    )
    js = nc.jetstream()
    for start in range(0, n, batch):
        ids = [f"v{i}" for i in range(start, min(start + batch, n))]
        chunk = data[start : start + len(ids)]
        for p, payload in batches.batches(ids, chunk, dim=DIM, partitions=PARTS):
            deadline = time.monotonic() + 120
            while True:
                try:
                    await js.publish(
                        f"lakehouse.vectors.{name}.{p}",
                        payload,
                        headers={"Nats-Msg-Id": f"{name}-{start}-{p}"},
                        timeout=2,
                    )
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)  # backoff while the server is away
        if gate is not None and not gate.reached.is_set() and start + batch >= gate.at:
            gate.reached.set()
            assert await asyncio.to_thread(gate.release.wait, 120)
    await nc.close()


def load_in_background(
    stack: StackLike, name: str, n: int, gate: Gate | None = None
) -> threading.Thread:
    url = stack.nats_url
    t = threading.Thread(target=lambda: asyncio.run(publish_vectors(url, name, n, gate)))
    t.start()
    return t


@pytest.fixture(scope="module")
def workers_csv(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Generated once for the module (rows only read it; a change goes to a copy)."""
    path = tmp_path_factory.mktemp("csv") / "workers.csv"
    generate(path, sizes(bool(request.config.getoption("--full")))["rows"], seed=11)
    return path


# ---- ingest -------------------------------------------------------------------------
def test_ingest_kill_9_ingest_worker_mid_write(
    tmp_path: Path, full: bool, rng: random.Random
) -> None:
    csv = tmp_path / "big.csv"
    generate(csv, max(80_000, sizes(full)["rows"]), seed=13)  # long enough to die mid-write
    # A short ack wait: the killed delivery comes back as soon as the new worker is up.
    stack = make_stack(
        tmp_path, ("catalog", "ingest", "query"), overrides={"workers": {"ack_wait": 2.0}}
    )
    try:
        job = post_ingest(stack, "crash_ingest", csv)
        wait_until(lambda: job_state(stack, job)["state"] == "running", timeout=30, interval=0.02)
        time.sleep(rng.uniform(0.0, 0.2))  # the fault's random point, not synchronisation
        stack.kill("ingest")
        assert job_state(stack, job)["state"] == "running"  # it really died mid-write
        began = time.monotonic()
        stack.spawn("ingest", "worker", "ingest")
        wait_job(stack, job)
        took = time.monotonic() - began
        report = dataset_recovered(stack, tmp_path, "crash_ingest", csv)
        rows = report["datasets"]["crash_ingest"]["row_count"]
        record("ingest: kill -9 ingest worker mid-write", took, f"{rows} rows exact")
    finally:
        stack.stop()


@pytest.mark.parametrize("point", ["catalog.before_publish", "catalog.after_publish"])
def test_ingest_kill_9_catalog_around_event_publish(
    tmp_path: Path, workers_csv: Path, point: str
) -> None:
    stack = make_stack(tmp_path, ("query",))
    try:
        # Its register call times out after nats.request_timeout, then retries: 3 s instead
        # of 10 keeps the row short (the retry is idempotent either way).
        stack.spawn("ingest", "worker", "ingest", env={"LAKEHOUSE_NATS__REQUEST_TIMEOUT": "3"})
        faulty = stack.spawn(
            "catalog", "worker", "catalog", env={"LAKEHOUSE_FAULTS": json.dumps({point: "kill"})}
        )
        wait_until(lambda: stack.healthy({"catalog": 1, "ingest": 1}), timeout=30, interval=0.1)
        job = post_ingest(stack, "crash_catalog", workers_csv)
        faulty.wait(120)  # the fault point kills it when the ingest registers
        assert faulty.returncode == -signal.SIGKILL
        stack.procs.pop("catalog")
        began = time.monotonic()
        stack.spawn("catalog", "worker", "catalog")
        wait_job(stack, job)
        took = time.monotonic() - began
        report = dataset_recovered(stack, tmp_path, "crash_catalog", workers_csv)
        assert report["datasets"]["crash_catalog"]["revision"] == 1  # registered exactly once
        record(f"ingest: kill -9 catalog worker at {point}", took, "1 revision, mirror ok")
    finally:
        stack.stop()


# ---- upsert and compaction ----------------------------------------------------------
def test_upsert_kill_9_ingest_worker_before_register(tmp_path: Path, workers_csv: Path) -> None:
    # Only the ingest worker reaches the fault point; the one restarted has no faults. A
    # short ack wait: the killed delivery comes back as soon as the new worker is up.
    faults = {
        "faults": {"ingest.upsert.before_register": "kill"},
        "workers": {"ack_wait": 2.0},
        "catalog": {"compact_deleted_ratio": 1.0},  # the history ends with the upsert
    }
    stack = make_stack(tmp_path, ("catalog", "ingest", "query"), overrides=faults)
    try:
        [faulty] = stack.procs["ingest"]
        wait_job(stack, post_ingest(stack, "crash_upsert", workers_csv))  # replace: no upsert
        week2 = tmp_path / "week2.csv"
        counts = next_export(workers_csv, week2)
        job = post_ingest(stack, "crash_upsert", week2, UPSERT)
        faulty.wait(120)  # the fault point kills it: upsert objects stored, not registered
        assert faulty.returncode == -signal.SIGKILL
        stack.procs.pop("ingest")
        assert job_state(stack, job)["state"] == "running"
        assert [e["revision"] for e in history(stack, "crash_upsert")] == [1]
        began = time.monotonic()
        stack.spawn("ingest", "worker", "ingest", env=NO_FAULTS)
        result = wait_job(stack, job)["result"]  # redelivered, diffed again, registered
        took = time.monotonic() - began
        assert {k: result[k] for k in counts} == counts
        report = dataset_recovered(stack, tmp_path, "crash_upsert", week2, exact=True)
        events = history(stack, "crash_upsert")
        upserts = [e for e in events if (e["change"] or {}).get("mode") == "upsert"]
        assert [e["revision"] for e in events] == [1, 2] and len(upserts) == 1
        assert upserts[0]["manifest"]["last_request"] == job
        assert sorted(report["datasets"]["crash_upsert"]["revisions"]) == ["1", "2"]
        record(
            "upsert: kill -9 ingest worker before register",
            took,
            f"1 upsert revision, {result['dataset_rows']} rows exact (checksum)",
        )
    finally:
        stack.stop()


def test_compact_kill_9_catalog_worker_before_register(tmp_path: Path, workers_csv: Path) -> None:
    # The upsert deletes ~7% of the rows: past this ratio, so the catalog compacts after it.
    # Only the catalog worker reaches the fault point; the one restarted has no faults.
    low = {
        "catalog": {"compact_deleted_ratio": 0.05},
        "faults": {"catalog.compact.before_register": "kill"},
    }
    stack = make_stack(tmp_path, ("catalog", "ingest", "query"), overrides=low)
    name = "crash_compact"
    try:
        [faulty] = stack.procs["catalog"]
        wait_job(stack, post_ingest(stack, name, workers_csv))
        week2 = tmp_path / "week2.csv"
        next_export(workers_csv, week2)
        job = post_ingest(stack, name, week2, UPSERT)
        faulty.wait(120)  # the compaction after the upsert dies: object stored, not registered
        assert faulty.returncode == -signal.SIGKILL
        stack.procs.pop("catalog")
        objects = stack.settings.data_dir / "objects"
        stored = {str(p) for p in (objects / "datasets" / name).rglob("*") if p.is_file()}
        began = time.monotonic()
        stack.spawn("catalog", "worker", "catalog", env=NO_FAULTS)  # compacts again at start

        def compacted() -> dict[str, Any] | None:
            r = httpx.get(f"{stack.base}/v1/catalog/{name}", timeout=10)
            m: dict[str, Any] = r.json() if r.status_code == 200 else {}
            return m if m and not m["deletes"] and m["revision"] > 2 else None

        manifest = wait_until(compacted, timeout=60, interval=0.1, what="compaction")
        took = time.monotonic() - began
        wait_job(stack, job)
        report = dataset_recovered(stack, tmp_path, name, week2, exact=True)
        events = history(stack, name)
        modes = [(e["revision"], (e["change"] or {}).get("mode")) for e in events]
        assert modes == [(1, "replace"), (2, "upsert"), (3, "compact")], modes
        assert len(manifest["objects"]) == 1 and manifest["revision"] == 3
        assert sorted(report["datasets"][name]["revisions"]) == ["1", "2", "3"]
        # The object the killed compaction stored: the retry wrote the same bytes (content
        # addressed, so it is the registered one), or gc swept it (no_orphans above).
        orphan = stored - {str(objects / k) for e in events[:2] for k in object_keys(e["manifest"])}
        assert len(orphan) == 1, orphan
        again = "re-used" if orphan.pop().endswith(manifest["objects"][0]["key"]) else "swept"
        record(
            "compact: kill -9 catalog worker before register",
            took,
            f"compacted on restart, {manifest['row_count']} rows exact, first object {again}",
        )
    finally:
        stack.stop()


def test_ingest_storage_stopped_5s(
    tmp_path: Path, full: bool, rng: random.Random, seaweed: SeaweedS3
) -> None:
    csv = tmp_path / "big.csv"
    generate(csv, max(80_000, sizes(full)["rows"]), seed=12)  # long enough to be mid-upload
    stack = make_stack(tmp_path, ("catalog", "ingest", "query"), backend="s3", seaweed=seaweed)
    try:
        posted: dict[str, str] = {}
        poster = threading.Thread(target=lambda: posted.update(job=post_ingest(stack, "s3", csv)))
        poster.start()
        time.sleep(rng.uniform(0.1, 0.4))  # the fault's random point, inside the upload
        assert seaweed.proc is not None and poster.is_alive()
        seaweed.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(5)  # the outage itself
        finally:
            seaweed.proc.send_signal(signal.SIGCONT)
        began = time.monotonic()
        poster.join(120)
        wait_job(stack, posted["job"])
        took = time.monotonic() - began
        report = dataset_recovered(stack, tmp_path, "s3", csv)
        rows = report["datasets"]["s3"]["row_count"]
        record("ingest: S3 server stopped 5 s mid-upload", took, f"{rows} rows exact")
    finally:
        stack.stop()


def test_concurrent_ingests_and_a_query_worker_killed(
    tmp_path: Path, full: bool, rng: random.Random
) -> None:
    # A query in flight on the killed worker is answered 504 after the gateway's deadline
    # (statement timeout + 7 s): a short statement timeout keeps that wait short.
    short = {"query": {"timeout": 2.0}}
    stack = make_stack(tmp_path, ("catalog", "ingest", "query"), overrides=short)
    try:
        stack.spawn("query", "worker", "query")
        wait_until(lambda: stack.healthy({"query": 2}), timeout=30, interval=0.1)
        n = sizes(full)["concurrent_rows"]
        csvs = []
        for i in range(10):
            csvs.append(tmp_path / f"c{i}.csv")
            generate(csvs[-1], n + i, seed=100 + i)
        jobs = [post_ingest(stack, f"conc{i}", p) for i, p in enumerate(csvs)]
        answers: list[tuple[int, Any]] = []
        stop = threading.Event()

        def query_loop() -> None:
            with stack.client(timeout=30) as c:
                while not stop.is_set():
                    i = rng.randrange(10)
                    try:
                        r = c.post("/v1/sql", json={"sql": f"SELECT count(*) FROM conc{i}"})
                        answers.append((r.status_code, (i, r.json())))
                    except httpx.HTTPError as exc:  # fails the test below, with the reason
                        answers.append((0, (i, {"detail": repr(exc)})))

        loops = [threading.Thread(target=query_loop) for _ in range(2)]
        for t in loops:
            t.start()
        states = [wait_job(stack, j) for j in jobs]
        wait_until(lambda: len(answers) > 20, timeout=30, interval=0.05)
        victim = stack.procs["query"][0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        stack.procs["query"].remove(victim)
        began = time.monotonic()
        stack.spawn("query", "worker", "query")
        wait_until(lambda: stack.healthy({"query": 2}), timeout=60, interval=0.1)
        took = time.monotonic() - began
        count = len(answers)
        wait_until(lambda: len(answers) > count + 20, timeout=30, interval=0.05)
        stop.set()
        for t in loops:
            t.join()
        for status, (i, body) in answers:
            if status == 200:
                assert body["rows"] == [[n + i]], body  # never a wrong answer
            else:  # not registered yet, or the killed worker's query: a clear, retryable error
                assert status in (400, 503, 504), (status, body)
                assert status != 400 or "conc" in body["detail"], body
        assert all(s["result"]["row_count"] == n + i for i, s in enumerate(states))
        for i, p in enumerate(csvs):
            check_dataset(stack, f"conc{i}", p)
        expect = {f"conc{i}": {"row_count": n + i} for i in range(10)}
        verify(stack, tmp_path, {"datasets": expect})
        no_orphans(stack)
        ok = sum(1 for s, _ in answers if s == 200)
        record(
            "10 ingests + kill -9 one of two query workers",
            took,
            f"{ok}/{len(answers)} answers 200 and correct, rest retryable",
        )
    finally:
        stack.stop()
