"""Chaos rows (issue 12, point 4): faults on a clustered stack of real processes — 3 NATS
nodes with R3 streams, two hosts each running a gateway and the catalog, ingest, query and
vector workers (``lakehouse.devtools.cluster``), storage on one shared directory.

Rows 1-5 share one loopback cluster (each row restarts what it kills; a row that failed
half-way is repaired by the next one's ``Cluster.revive``) and use their own index and
dataset names; row 6 runs its own cluster in network namespaces. Every row ends with the
same checks: counts exact against an expectation computed independently (the id list, DuckDB
on the input CSV), ``lakehouse verify --expect``, no orphan after ``lakehouse gc``, /health
on both gateways, and a count of acknowledged messages lost and duplicates applied, read
from the stream itself (each vector batch's Nats-Msg-Id) and from the dataset (rows,
distinct ids, revisions) — both must be 0. The rows' table is printed at the end of the run
and kept in docs/RELIABILITY.md. ``pytest --full`` runs bigger loads; the storage rows
(SeaweedFS volume servers) are in test_chaos_storage.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js import api

from lakehouse.devtools.bench.data import clustered
from lakehouse.devtools.cluster import Cluster, Host, HostStack
from lakehouse.devtools.datagen import generate
from lakehouse.devtools.netns import unavailable
from lakehouse.devtools.servers import wait_until
from lakehouse.platform import streams
from lakehouse.platform.errors import BadRequest
from lakehouse.vectors.batches import decode
from schemas import subjects as S
from tests.support.recovery import record
from tests.test_crash_matrix import (
    DIM,
    PARTS,
    Gate,
    create_index,
    csv_truth,
    dataset_recovered,
    expect_vectors,
    history,
    index_count,
    job_state,
    load_in_background,
    no_orphans,
    post_ingest,
    publish_vectors,
    sizes,
    sql,
    verify,
    wait_job,
)

pytestmark = pytest.mark.slow

KINDS = ("catalog", "ingest", "query", "vectors")  # no embed: no row here embeds text
OVERRIDES: dict[str, Any] = {
    "catalog": {"gc_grace": 0.0},
    # Leases expire in 3 s: a partition whose owner is gone moves within seconds.
    "vectors": {"snapshot_every": 1.0, "snapshot_min_changes": 2000, "lease_ttl": 3.0},
    "query": {"timeout": 5.0},
    # The shipped retry backoff (1 s doubling: deliveries 2-5 within 15 s), not the crash
    # matrix's 0.1-1 s: with that, a handler whose job-status publish meets a leaderless
    # JOBS stream spends its 5 deliveries in ~3 s, less than a NATS leader election (5-8 s),
    # and the job fails. The short ack wait (a lost delivery back in 5 s) stays.
    "workers": {"backoff_base": 1.0, "backoff_max": 30.0},
}
OUTAGE = 10.0  # seconds a partitioned machine stays cut off


def chaos_sizes(full: bool) -> dict[str, int]:
    """Vectors per load (CI 5K, ``--full`` 100K), rows of the big ingest (the crash
    matrix's: 20K, 200K), of the gateway row's ingests (a job long enough to be cut
    mid-request: 2K, 20K) and of a small dataset to query (200, 2K)."""
    return {
        "vectors": sizes(full)["vectors"] if full else 5_000,
        "rows": sizes(full)["rows"],
        "gateway_rows": 20_000 if full else 2_000,
        "small_rows": 2_000 if full else 200,
    }


# ---- fixtures ---------------------------------------------------------------------------
def new_cluster(root: Path, **kw: Any) -> Cluster:
    return Cluster(root, kinds=KINDS, storage="file", tuned=True, overrides=OVERRIDES, **kw)


@pytest.fixture(scope="class")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = new_cluster(tmp_path_factory.mktemp("chaos") / "loopback").start(timeout=180)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(loopback: Cluster) -> Cluster:
    """The module's loopback cluster, with every node and process running."""
    loopback.revive()
    return loopback


@pytest.fixture(scope="module")
def rows_csv(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Big enough that an ingest job runs for a while (read only; generated once)."""
    path = tmp_path_factory.mktemp("chaos-csv") / "workers.csv"
    generate(path, chaos_sizes(bool(request.config.getoption("--full")))["rows"], seed=17)
    return path


# ---- measuring --------------------------------------------------------------------------
def servers(url: str) -> list[str]:
    return [u.strip() for u in url.split(",")]


def batches_in_stream(url: str, index: str) -> tuple[int, int, list[str]]:
    """Read every stored batch of ``index`` from LAKEHOUSE_VECTORS: messages, distinct
    Nats-Msg-Ids among them (a batch stored twice has one id twice) and the vector ids they
    carry (with repeats).

    Read the way replay and verify read (direct gets, no consumer to elect a leader for);
    a cluster that has just healed may still time a request out, so the whole read is
    retried from the start until a deadline."""

    async def go() -> tuple[int, int, list[str]]:
        nc = await nats.connect(servers(url), connect_timeout=2, ping_interval=1)
        try:
            start, end = await streams.bounds(nc, S.STREAM_VECTORS)
            messages, msg_ids, ids = 0, set[str](), list[str]()
            subject = f"{S.VECTORS_PREFIX}.{index}.>"
            async for rec in streams.read(nc, S.STREAM_VECTORS, start, end, subject):
                messages += 1
                msg_ids.add(rec.headers.get("Nats-Msg-Id", f"seq{rec.seq}"))
                ids += decode(rec.data, DIM).ids
            return messages, len(msg_ids), ids
        finally:
            await nc.close()

    deadline = time.monotonic() + 90
    while True:
        try:
            return asyncio.run(go())
        except (nats.errors.Error, TimeoutError, BadRequest):
            if time.monotonic() > deadline:
                raise


def vectors_whole(stack: HostStack, tmp: Path, index: str, n: int) -> tuple[int, int]:
    """The checks every vector row ends with; returns (acked vectors lost, duplicates).

    The loader returned, so every one of the ``n`` vectors was acknowledged. Lost: acked ids
    absent from the stream or from the live index (verify compares the index's ids digest
    with the expected one); duplicates: batches stored twice (one Nats-Msg-Id on two
    messages) and ids carried twice."""
    want = [f"v{i}" for i in range(n)]
    messages, distinct, ids = batches_in_stream(stack.nats_url, index)
    lost = len(set(want) - set(ids))
    duplicates = (messages - distinct) + (len(ids) - len(set(ids)))
    assert (lost, duplicates) == (0, 0), f"{lost} acked vectors lost, {duplicates} duplicates"
    # Complete again (a partition may be between owners for a lease period after a fault:
    # searches say so with `partial`; seen once after a meta-leader kill under load).
    wait_until(lambda: index_count(stack, index) == n, timeout=60, interval=0.2, what="count")
    verify(stack, tmp, expect_vectors(index, want))
    no_orphans(stack)
    assert stack.healthy(), "every gateway answers /health with every kind on every host"
    return lost, duplicates


def rows_whole(stack: HostStack, name: str, csv: Path) -> tuple[int, int]:
    """Acknowledged rows lost and rows (or registrations) applied twice in dataset ``name``
    against the input CSV (ids 1..n, so the id sum catches a wrong row too); both must be
    0."""
    rows, id_sum = csv_truth(csv)
    query = f"SELECT count(*), count(DISTINCT worker_id), sum(worker_id) FROM {name}"
    [[count, distinct, total]] = sql(stack, query)
    revisions = len(history(stack, name))
    lost, duplicates = rows - distinct, (count - distinct) + (revisions - 1)
    assert (lost, duplicates) == (0, 0), f"{lost} rows lost, {duplicates} duplicates"
    assert total == id_sum
    return lost, duplicates


def since(t: float) -> float:
    return time.monotonic() - t


async def _probe(url: str, check: Callable[[Any], Any]) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
    except Exception:
        return False
    try:
        return bool(await check(nc.jetstream(timeout=1)))
    except Exception:
        return False
    finally:
        await nc.close()


def until_back(cluster: Cluster, killed: int, stream: str | None, timeout: float = 60) -> float:
    """Seconds from now until the cluster serves again without node ``killed``: ``stream``
    has a leader that answers its info (writes are acknowledged again), or, for None, a
    JetStream meta leader that creates a stream. Polled through a live node."""
    assert cluster.nats is not None
    live = next(n for i, n in enumerate(cluster.nats.nodes, 1) if i != killed)
    mine = f"n{killed}"

    async def leads(js: Any) -> bool:
        assert stream is not None
        info = await js.stream_info(stream)
        return info.cluster is not None and info.cluster.leader not in (None, mine)

    async def places(js: Any) -> bool:
        probe = f"CHAOS_PROBE_{uuid.uuid4().hex[:6]}"
        cfg = api.StreamConfig(
            name=probe, subjects=[f"chaos.probe.{probe}"], storage=api.StorageType.MEMORY
        )
        await js.add_stream(cfg)
        await js.delete_stream(probe)
        return True

    check = leads if stream else places
    started = time.monotonic()
    wait_until(
        lambda: asyncio.run(_probe(live.url, check)),
        timeout=timeout,
        interval=0.05,
        what=f"{stream or 'the meta leader'} back without node {killed}",
    )
    return since(started)


# ---- row 4's client: fails over between the gateways --------------------------------------
@dataclass
class Answer:
    what: str
    base: str  # the gateway that answered
    status: int
    body: Any
    waited: float  # seconds from the first attempt to this answer
    retried: bool  # a gateway failed it first


@dataclass
class FailoverClient:
    """Sends each request to the first gateway that takes it, in ``bases`` order. A read
    (SQL, search) goes to the next gateway after any transport error or a 503; an ingest
    at once only when the connection was refused (it never arrived). An ingest cut
    mid-request (or answered 503) has an unknown outcome: the client looks for its dataset
    through the other gateway first and sends it again only if it never appears (a second
    send could apply it twice)."""

    bases: list[str]
    answers: list[Answer] = field(default_factory=list)
    inflight: dict[str, tuple[str, float]] = field(default_factory=dict)  # what -> (base, since)
    unknown: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def send(self, what: str, method: str, path: str, **kw: Any) -> Answer:
        started, retried = time.monotonic(), False
        deadline = started + 60
        while True:
            for base in self.bases:
                self.inflight[what] = (base, time.monotonic())
                try:
                    r = httpx.request(method, base + path, timeout=60, **kw)
                except httpx.ConnectError:
                    retried = True
                    continue
                except httpx.TransportError:
                    r = None
                if r is None or r.status_code == 503:  # cut mid-request, or not taken
                    retried = True
                    if what == "ingest" and self.landed(base, kw):
                        self.unknown += 1
                        return self.keep(Answer(what, base, 200, None, since(started), True))
                    continue
                answer = Answer(what, base, r.status_code, r.json(), since(started), retried)
                return self.keep(answer)
            assert time.monotonic() < deadline, f"no gateway took {what} {path}"
            time.sleep(0.1)  # backoff before the next round: every gateway refused it

    def keep(self, a: Answer) -> Answer:
        self.inflight.pop(a.what, None)
        self.answers.append(a)
        return a

    def waiting(self, what: str, base: str, for_at_least: float) -> bool:
        """Whether a ``what`` request has been in flight on ``base`` that long."""
        got = self.inflight.get(what)
        return got is not None and got[0] == base and since(got[1]) >= for_at_least

    def landed(self, failed: str, kw: dict[str, Any]) -> bool:
        """Whether the ingest cut on gateway ``failed`` registered its dataset after all
        (asked through the others, for 30 s: a job in flight finishes in that time)."""
        name = kw["params"]["name"]
        others = [b for b in self.bases if b != failed]

        def registered() -> bool:
            for base in others:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/v1/catalog/{name}", timeout=5).status_code == 200:
                        return True
            return False

        try:
            wait_until(registered, timeout=30, interval=0.2)
            return True
        except AssertionError:
            return False


# ---- row 5's view of partition ownership ----------------------------------------------------
def owners(stack: HostStack) -> dict[tuple[str, int], str] | None:
    """(index, partition) -> owning instance over every index; None while a partition has
    no owner that answers."""
    out: dict[tuple[str, int], str] = {}
    with stack.client(timeout=10) as c:
        for spec in c.get("/v1/vectors/indexes").json()["indexes"]:
            stats = c.get(f"/v1/vectors/indexes/{spec['name']}").json()
            if stats["missing_partitions"]:
                return None
            for p in stats["partitions_detail"]:
                out[(spec["name"], p["partition"])] = p["owner"]
    return out


def instance_of(stack: HostStack, pid: int) -> str:
    body = stack.health() or {}
    for i in body["workers"]["vectors"]["instances"]:
        if i["pid"] == pid:
            return str(i["instance"])
    raise AssertionError(f"no vector worker with pid {pid} answers")


# ---- rows 1-5: one loopback cluster --------------------------------------------------------
class TestLoopbackCluster:
    """Rows 1-5 on the class's loopback cluster (stopped before row 6 starts its own).

    1 and 3: the LAKEHOUSE_VECTORS stream leader / the JetStream meta leader SIGKILLed mid
    vector load; 2: the LAKEHOUSE_INGEST stream leader SIGKILLed mid ingest; 4: one of two
    gateways SIGKILLed while a client fails over; 5: a vector worker joins and one is
    SIGKILLed mid load."""

    @pytest.mark.parametrize("target", [S.STREAM_VECTORS, "meta"])
    def test_nats_leader_killed_mid_vector_load(
        self, cluster: Cluster, tmp_path: Path, full: bool, rng: random.Random, target: str
    ) -> None:
        assert cluster.nats is not None
        n = chaos_sizes(full)["vectors"]
        stack = cluster.as_stack(1)
        index = "chaos_stream_leader" if target != "meta" else "chaos_meta_leader"
        create_index(stack, index)
        gate = Gate(int(n * rng.uniform(0.3, 0.6)))
        loader = load_in_background(stack, index, n, gate)
        try:
            assert gate.reached.wait(120)
            assert index_count(stack, index) < n  # the fault lands mid-load
            leader = cluster.nats.leader(None if target == "meta" else target)
            assert leader is not None
            killed_at = time.monotonic()
            cluster.kill_node(leader)
            gate.release.set()  # the loader publishes into the election and retries
            took = until_back(cluster, leader, None if target == "meta" else target)
            cluster.restart_node(leader)
            loader.join(300)
            assert not loader.is_alive()
            wait_until(lambda: cluster.caught_up(S.STREAM_VECTORS), timeout=60, interval=0.2)
            caught_up = since(killed_at)
            wait_until(lambda: index_count(stack, index) == n, timeout=300, interval=0.2)
            whole = since(killed_at)
        finally:
            gate.release.set()
            loader.join(300)
        lost, duplicates = vectors_whole(stack, tmp_path, index, n)
        what = "JetStream meta leader" if target == "meta" else f"{target} stream leader"
        record(
            f"NATS: SIGKILL the {what} mid vector load, restart it",
            took,
            f"{n} vectors exact (count, digest, stream); node back and current at "
            f"{caught_up:.1f} s, load done at {whole:.1f} s",
            lost=lost,
            duplicates=duplicates,
        )

    def test_ingest_stream_leader_killed_mid_ingest(
        self, cluster: Cluster, tmp_path: Path, rows_csv: Path
    ) -> None:
        assert cluster.nats is not None
        stack = cluster.as_stack(1)
        name = "chaos_ingest_leader"
        job = post_ingest(stack, name, rows_csv)  # 202: acknowledged
        wait_until(lambda: job_state(stack, job)["state"] == "running", timeout=60, interval=0.02)
        leader = cluster.nats.leader(S.STREAM_INGEST)
        assert leader is not None
        killed_wall, killed_at = time.time(), time.monotonic()
        cluster.kill_node(leader)
        took = until_back(cluster, leader, S.STREAM_INGEST)
        cluster.restart_node(leader)
        state = wait_job(cluster.as_stack(2), job)
        done = since(killed_at)
        ended = datetime.fromisoformat(state["updated_at"]).timestamp()
        assert ended > killed_wall, "the job ended before the kill: give it a bigger CSV"
        wait_until(lambda: cluster.caught_up(S.STREAM_INGEST), timeout=60, interval=0.2)
        report = dataset_recovered(stack, tmp_path, name, rows_csv)
        assert report["datasets"][name]["revision"] == 1
        lost, duplicates = rows_whole(stack, name, rows_csv)
        rows = report["datasets"][name]["row_count"]
        record(
            "NATS: SIGKILL the LAKEHOUSE_INGEST stream leader mid ingest, restart it",
            took,
            f"{rows} rows exact, 1 revision; job done at {done:.1f} s",
            lost=lost,
            duplicates=duplicates,
        )

    def test_gateway_killed_clients_fail_over(
        self, cluster: Cluster, tmp_path: Path, full: bool, rng: random.Random
    ) -> None:
        first, second = cluster.members[0], cluster.members[1]
        stack = cluster.as_stack(second)
        size = chaos_sizes(full)["small_rows"]
        index, n = "chaos_gateways", 2_000
        create_index(stack, index)
        asyncio.run(publish_vectors(stack.nats_url, index, n))
        wait_until(lambda: index_count(stack, index) == n, timeout=120, interval=0.1)
        queries = clustered(n, DIM, centers=100)
        base_csv = tmp_path / "gw-base.csv"
        generate(base_csv, size, seed=500)
        wait_job(stack, post_ingest(stack, "chaos_gw_base", base_csv))
        base_rows = csv_truth(base_csv)[0]

        client = FailoverClient([first.base, second.base])
        csvs: dict[str, Path] = {}
        go = threading.Event()  # ingests are paused while it is clear (a dataset each: few)
        go.set()

        def ingests() -> None:
            for k in range(1000):
                go.wait()
                if client.stop.is_set():
                    return
                name = f"chaos_gw_{k}"
                csvs[name] = tmp_path / f"{name}.csv"
                generate(csvs[name], chaos_sizes(full)["gateway_rows"] + k, seed=600 + k)
                body = csvs[name].read_bytes()
                client.send("ingest", "POST", "/v1/ingest", params={"name": name}, content=body)

        def reads() -> None:
            while not client.stop.is_set():
                client.send(
                    "sql", "POST", "/v1/sql", json={"sql": "SELECT count(*) FROM chaos_gw_base"}
                )
                q = queries[rng.randrange(n)].tolist()
                client.send(
                    "search",
                    "POST",
                    f"/v1/vectors/indexes/{index}/search",
                    json={"vector": q, "k": 10},
                )

        loops = [threading.Thread(target=ingests), threading.Thread(target=reads)]
        for t in loops:
            t.start()
        try:

            def answered(what: str, at_least: int, after: int = 0) -> bool:
                return sum(1 for a in client.answers[after:] if a.what == what) >= at_least

            wait_until(lambda: answered("ingest", 2) and answered("search", 5), timeout=120)
            # An ingest in flight on the first gateway, its CSV uploaded and its job published
            # (the gateway waits for the job): it is cut mid-request.
            wait_until(lambda: client.waiting("ingest", first.base, 0.3), timeout=60, interval=0.01)
            cut = len(client.answers)
            killed_at = time.monotonic()
            cluster.kill(first, "gateway")  # SIGKILL, whatever it had in flight
            wait_until(
                lambda: answered("ingest", 2, cut) and answered("search", 5, cut),
                timeout=120,
                what="answers through the other gateway",
            )
            go.clear()  # no new ingest while the killed gateway restarts
            cluster.spawn(first, "gateway", "gateway")
            wait_until(lambda: cluster.health(first) is not None, timeout=60, interval=0.1)
            back = since(killed_at)
            again = len(client.answers)
            go.set()
            wait_until(
                lambda: (
                    {a.what for a in client.answers[again:] if a.base == first.base}
                    >= {"ingest", "search"}
                ),
                timeout=60,
                what="the restarted gateway to answer again",
            )
        finally:
            client.stop.set()
            go.set()
            for t in loops:
                t.join(120)
        wrong = [a for a in client.answers if a.status != 200]
        assert not wrong, wrong[:5]
        for a in client.answers:
            if a.what == "sql":
                assert a.body["rows"] == [[base_rows]], a
            elif a.what == "search":
                assert not a.body["partial"] and len(a.body["hits"]) == 10, a
        retried = [a for a in client.answers if a.retried]
        assert retried, "no request met the dead gateway"
        took = max(a.waited for a in retried)
        acked = sorted(csvs, key=lambda s: int(s.rsplit("_", 1)[1]))
        done = [a for a in client.answers if a.what == "ingest"]
        assert len(done) == len(acked), "an ingest was never answered"
        lost = duplicates = 0
        for name in acked:
            lo, dup = rows_whole(stack, name, csvs[name])
            lost, duplicates = lost + lo, duplicates + dup
        expect = {name: {"row_count": csv_truth(csvs[name])[0]} for name in acked}
        verify(stack, tmp_path, {"datasets": expect})
        no_orphans(stack)
        assert cluster.healthy()
        record(
            "gateway: SIGKILL one of two while clients retry on the other",
            took,
            f"{len(client.answers)} requests all answered ({len(retried)} by the other gateway, "
            f"ingests cut mid-request and found registered: {client.unknown}), "
            f"{len(acked)} ingests exact, 1 revision each; killed gateway back at {back:.1f} s",
            lost=lost,
            duplicates=duplicates,
        )

    def test_vector_worker_joins_and_one_leaves_mid_load(
        self, cluster: Cluster, tmp_path: Path, full: bool, rng: random.Random
    ) -> None:
        first, second = cluster.members[0], cluster.members[1]
        stack = cluster.as_stack(second)
        n = chaos_sizes(full)["vectors"]
        index = "chaos_rebalance"
        create_index(stack, index)
        [leaver] = first.procs["vectors"]
        gone = instance_of(stack, leaver.pid)
        queries = clustered(n, DIM, centers=100)
        answers: list[dict[str, Any]] = []
        stop = threading.Event()

        def searches() -> None:
            with stack.client(timeout=30) as c:
                while not stop.is_set():
                    q = queries[rng.randrange(n)].tolist()
                    try:
                        r = c.post(
                            f"/v1/vectors/indexes/{index}/search", json={"vector": q, "k": 10}
                        )
                    except httpx.HTTPError as exc:  # fails the test below, with the reason
                        answers.append({"status": 0, "error": repr(exc)})
                        continue
                    answers.append(
                        {"status": r.status_code, **(r.json() if r.status_code == 200 else {})}
                    )

        gate = Gate(int(n * rng.uniform(0.3, 0.5)))
        loader = load_in_background(stack, index, n, gate)
        searcher = threading.Thread(target=searches)
        searcher.start()
        try:
            assert gate.reached.wait(120)
            assert index_count(stack, index) < n
            joiner = cluster.spawn(second, "vectors", "worker", "vectors")
            gate.release.set()
            wait_until(lambda: cluster.healthy({"vectors": 3}), timeout=60, interval=0.1)
            joined = instance_of(stack, joiner.pid)
            before = wait_until(lambda: owners(stack), timeout=60, interval=0.1)
            assert before is not None
            held = [key for key, owner in before.items() if owner == gone]
            assert held, "the worker that leaves owned nothing"
            left_at = time.monotonic()
            cluster.kill(first, "vectors")  # SIGKILL: its leases expire, nothing is handed over

            def moved() -> bool:
                now = owners(stack)
                return now is not None and gone not in now.values()

            wait_until(moved, timeout=60, interval=0.1, what="the leaver's partitions to move")
            took = since(left_at)
            loader.join(300)
            assert not loader.is_alive()
            wait_until(lambda: index_count(stack, index) == n, timeout=300, interval=0.2)
            seen = len(answers)
            wait_until(lambda: len(answers) > seen + 5, timeout=60)  # searches after it all
        finally:
            gate.release.set()
            stop.set()
            loader.join(300)
            searcher.join(60)
        after = owners(stack)
        assert after is not None and all(after[key] != gone for key in held)  # moved by lease
        assert joined in after.values(), "the joined worker owns no partition"
        partial = 0
        for a in answers:
            assert a["status"] == 200, a
            answered = {p["partition"] for p in a["partitions"]}
            assert answered | set(a["missing_partitions"]) == set(range(PARTS)), a
            assert a["partial"] == bool(a["missing_partitions"]), a
            partial += a["partial"]
        assert not answers[-1]["partial"] and len(answers[-1]["hits"]) == 10
        lost, duplicates = vectors_whole(stack, tmp_path, index, n)
        record(
            "vectors: a worker joins and one is SIGKILLed mid load (3 → 2 workers)",
            took,
            f"{n} vectors exact; {len(held)} partitions moved by lease; {len(answers)} searches "
            f"all answered, {partial} flagged partial while a partition moved",
            lost=lost,
            duplicates=duplicates,
        )


# ---- row 6: a machine partitioned for 10 s -------------------------------------------------
@dataclass
class Query:
    what: str
    sent: float
    done: float
    status: int  # 0: no answer (transport error); -1: a wrong answer
    partial: bool = False


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[Cluster]:
    why = unavailable()
    if why:
        pytest.skip(why)
    cluster = new_cluster(tmp_path / "netns", netns=True).start(timeout=180)
    try:
        yield cluster
    finally:
        if cluster.network is not None:  # a cut machine's processes stop gracefully
            for machine in list(cluster.network.machines):
                with contextlib.suppress(RuntimeError):
                    cluster.network.heal(machine)
        cluster.stop()


def test_partition_a_machine_for_10s(
    netns_cluster: Cluster, tmp_path: Path, full: bool, rng: random.Random, rows_csv: Path
) -> None:
    cluster = netns_cluster
    assert cluster.network is not None
    client: Host = cluster.members[1]  # the client's gateway is on this host's machine
    cut = cluster.machine_of(1)
    assert cut is not None and cut != client.machine
    stack = cluster.as_stack(client)
    with pytest.raises(RuntimeError, match=r"Cluster\.call"):
        _ = stack.base  # never from this namespace: it routes 10.231.x.x off the machine

    def there(fn: Callable[[], Any]) -> Any:  # on the client's machine
        return cluster.call(fn, client)

    n = chaos_sizes(full)["vectors"]
    index, name, base = "chaos_partition", "chaos_partition_rows", "chaos_partition_base"
    base_csv = tmp_path / "base.csv"
    generate(base_csv, chaos_sizes(full)["small_rows"], seed=700)
    base_rows = csv_truth(base_csv)[0]
    there(lambda: create_index(stack, index))
    there(lambda: wait_job(stack, post_ingest(stack, base, base_csv)))
    queries = clustered(n, DIM, centers=100)
    gate = Gate(int(n * rng.uniform(0.3, 0.5)))
    failures: list[BaseException] = []
    answers: list[Query] = []
    stop = threading.Event()

    def load() -> None:
        try:
            there(lambda: asyncio.run(publish_vectors(stack.nats_url, index, n, gate)))
        except BaseException as exc:
            failures.append(exc)

    def query_loop() -> None:
        with stack.client(timeout=30) as c:
            while not stop.is_set():
                for what, path, body in (
                    ("sql", "/v1/sql", {"sql": f"SELECT count(*) FROM {base}"}),
                    (
                        "search",
                        f"/v1/vectors/indexes/{index}/search",
                        {"vector": queries[rng.randrange(n)].tolist(), "k": 10},
                    ),
                ):
                    sent = time.monotonic()
                    try:
                        r = c.post(path, json=body)
                    except httpx.HTTPError:
                        answers.append(Query(what, sent, time.monotonic(), 0))
                        continue
                    status, partial = r.status_code, False
                    if status == 200 and what == "sql" and r.json()["rows"] != [[base_rows]]:
                        status = -1  # a wrong answer: fails the test below
                    if status == 200 and what == "search":
                        partial = bool(r.json()["partial"])
                    answers.append(Query(what, sent, time.monotonic(), status, partial))

    loader = threading.Thread(target=load)
    querier = threading.Thread(target=lambda: there(query_loop))
    loader.start()
    querier.start()
    try:
        assert gate.reached.wait(120)
        job = there(lambda: post_ingest(stack, name, rows_csv))
        there(
            lambda: wait_until(
                lambda: job_state(stack, job)["state"] == "running", timeout=60, interval=0.02
            )
        )
        cut_wall, cut_at = time.time(), time.monotonic()
        cluster.network.cut(cut)  # node n1 and host 1's gateway and workers
        gate.release.set()
        time.sleep(OUTAGE)  # the outage itself, not synchronisation
        cluster.network.heal(cut)
        healed_at = time.monotonic()
        steps: dict[str, float] = {}
        loader.join(300)
        assert not loader.is_alive() and not failures, failures
        steps["load"] = since(healed_at)
        state = there(lambda: wait_job(stack, job, timeout=300))
        steps["job"] = since(healed_at)
        ended = datetime.fromisoformat(state["updated_at"]).timestamp()
        assert ended > cut_wall, "the job ended before the cut: give it a bigger CSV"
        there(lambda: wait_until(lambda: index_count(stack, index) == n, timeout=300, interval=0.2))
        steps["index"] = since(healed_at)
        wait_until(cluster.healthy, timeout=120, interval=0.2, what="both gateways healthy")
        steps["health"] = since(healed_at)
        for stream in (S.STREAM_VECTORS, S.STREAM_INGEST):
            wait_until(functools.partial(cluster.caught_up, stream), timeout=60, interval=0.2)
        steps["streams"] = since(healed_at)

        def balanced() -> bool:  # host 1's vector worker took its share back
            now = owners(stack)
            return now is not None and len(set(now.values())) == 2

        there(lambda: wait_until(balanced, timeout=60, interval=0.2))
        took = steps["balanced"] = since(healed_at)
        settled_at = time.monotonic()
        wait_until(lambda: sum(a.sent > settled_at for a in answers) > 4, timeout=60)
    finally:
        gate.release.set()
        stop.set()
        loader.join(300)
        querier.join(60)
    during = [a for a in answers if a.sent < healed_at and a.done > cut_at]
    served = sum(1 for a in during if a.status == 200)
    slowest = max((a.done - a.sent for a in during), default=0.0)
    settled = [(a.what, a.status, a.partial) for a in answers if a.sent > settled_at]
    assert all(status == 200 and not partial for _, status, partial in settled), settled
    # During the cut: an answer (partial or not), or a clear retryable error; never a wrong one.
    assert all(a.status in (0, 200, 503, 504) for a in answers), answers
    report = there(lambda: dataset_recovered(stack, tmp_path, name, rows_csv))
    assert report["datasets"][name]["revision"] == 1
    lost, duplicates = there(lambda: rows_whole(stack, name, rows_csv))
    vlost, vdup = there(lambda: vectors_whole(stack, tmp_path, index, n))
    record(
        f"netns: machine {cut} (a NATS node + host 1's gateway and workers) cut off for "
        f"{OUTAGE:g} s during ingest, vector load and queries",
        took,
        f"{n} vectors and {report['datasets'][name]['row_count']} rows exact; queries from "
        f"{client.machine} during the cut: {served}/{len(during)} answered (slowest "
        f"{slowest:.1f} s), all after; converged after heal: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()),
        lost=lost + vlost,
        duplicates=duplicates + vdup,
    )
