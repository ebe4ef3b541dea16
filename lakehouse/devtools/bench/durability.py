"""The ``durability`` workload: what ``jetstream { sync_interval: always }`` (an fsync before
every acknowledgement) costs next to nats-server's default (a flush every 2 minutes, which let
acknowledged writes vanish on power failure in the 2025 Jepsen analysis of NATS 2.12.1).

Four stacks in the same run: one server (R1: ``lakehouse up`` with ``supervisor.nats_sync``)
and a 3-node cluster (R3 streams: :class:`NatsCluster`, the gateway and the workers ingest and
vector load need), each with the default and with ``always``. They start together; then each
measurement runs on the four in turn: raw JetStream publishes (1 KB, acked, each with its
Nats-Msg-Id; 16 in flight, and one at a time), the project's ingest (CSVs through the gateway,
ingest and catalog workers) and vector load (binary batches published the upstream way, applied
by a vector worker). A row per mode and measurement: ours = ``always``, floor = the default, so
the ratio is what ``always`` keeps. Checked: each server runs the mode asked for (its config
file, or its /varz), every publish is stored, every ingest has its rows, every vector is
counted; timings never are.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import numpy as np
from nats.js import JetStreamContext, api

from lakehouse.devtools.bench.data import clustered
from lakehouse.devtools.bench.workloads import Row, new_index, wait_count
from lakehouse.devtools.datagen import generate
from lakehouse.devtools.servers import NatsCluster, NatsServer, eventually
from lakehouse.devtools.stack import Stack
from lakehouse.platform.bus import STREAMS, provision
from lakehouse.platform.config import Settings, load_settings
from lakehouse.platform.procs import free_port, with_nats_sync
from lakehouse.vectors import batches

SYNCS = ("default", "always")
KINDS = ("catalog", "ingest", "vectors")  # what ingest and vector load go through
MAX_ROWS, MAX_VECTORS, MAX_DIM = 50_000, 10_000, 384
"""Caps on the bench's sizes: every measurement runs four times a round."""
KEYS = {
    "publish16": ("JetStream publish 1 KB, 16 in flight (msg/s)", "msg/s"),
    "publish1": ("JetStream publish 1 KB, one at a time (msg/s)", "msg/s"),
    "ingest": ("ingest {files}×{rows:,} rows (rows/s)", "rows/s"),
    "vectors": ("vector load {vectors:,}×{dim} (vec/s)", "vec/s"),
}
FILES = 3
SERIAL = itertools.count()


@dataclass
class Sizes:
    rows: int  # per CSV; FILES of them are ingested
    vectors: int
    dim: int
    messages: int  # raw publishes 16 in flight; a quarter of them one at a time
    rounds: int  # each measurement on each stack; the rows give the medians

    @classmethod
    def of(cls, rows: int, vectors: int, dim: int) -> Sizes:
        """Capped at MAX_*; CI sizes (under 10K rows) measure once: only correctness counts
        there. Larger ones three rounds, since one run on a shared machine says little."""
        rows, vectors, dim = min(rows, MAX_ROWS), min(vectors, MAX_VECTORS), min(dim, MAX_DIM)
        return cls(rows, vectors, dim, max(500, rows // 5), 1 if rows < 10_000 else 3)


def durability(work: Path, rows: int, vectors: int, dim: int) -> list[Row]:
    """R1 and R3, each with sync default and always, sizes per :meth:`Sizes.of`. At CI sizes
    (one round) only the publishes, on bare nats-servers: four stacks of processes would
    take a minute of a 2-core machine to say nothing a CI run needs."""
    size = Sizes.of(rows, vectors, dim)
    if size.rounds == 1:
        return publishes_only(work, size)
    csv = work / "durability.csv"
    generate(csv, size.rows, seed=5)
    data = clustered(size.vectors, size.dim, centers=max(50, size.vectors // 200), noise=0.5)
    configs = [(replicas, sync) for replicas in (1, 3) for sync in SYNCS]
    got: dict[tuple[str, int, str], list[float]] = {}
    with ExitStack() as running:
        # All four start at once (most of the time is processes starting); then each
        # measurement runs on the four in turn, every other round in reverse order, so a
        # change in the machine's load hits default and always alike.
        try:
            stacks = started(running, [stack_for(work / f"r{r}-{s}", r, s) for r, s in configs])
        except Exception as exc:
            raise RuntimeError(f"a stack did not start: {exc}\n{log_tails(work)}") from exc
        generate(work / "warm_up.csv", 20, seed=6)
        for stack in stacks:
            warm_up(stack, work / "warm_up.csv")
        for turn in range(size.rounds):
            order = list(zip(configs, stacks, strict=True))
            for key in KEYS:
                for (replicas, sync), stack in order[:: -1 if turn % 2 else 1]:
                    value = measure(key, stack, replicas, csv, size, data)
                    got.setdefault((key, replicas, sync), []).append(value)
    out = []
    for replicas in (1, 3):
        for key, (label, unit) in KEYS.items():
            always, default = got[key, replicas, "always"], got[key, replicas, "default"]
            ratios = ", ".join(f"{a / d:.2f}" for a, d in zip(always, default, strict=True))
            out.append(
                Row(
                    f"R{replicas} sync always: "
                    + label.format(files=FILES, rows=size.rows, vectors=size.vectors, dim=size.dim),
                    statistics.median(always),
                    statistics.median(default),
                    unit,
                    note="floor: nats-server's default sync_interval (2 min)"
                    + (
                        f"; medians of {size.rounds}, ratio per round {ratios}"
                        if size.rounds > 1
                        else ""
                    ),
                )
            )
    return out


def publishes_only(work: Path, size: Sizes) -> list[Row]:
    """The publish rows on a bare nats-server (R1) and a 3-node cluster (R3) per sync mode."""
    out = []
    for replicas in (1, 3):
        got = {}
        for sync in SYNCS:
            root = work / f"bare-r{replicas}-{sync}"
            if replicas == 1:
                conf = with_nats_sync("jetstream {}\nmax_payload: 8MB\n", sync)
                server: NatsServer | NatsCluster = NatsServer(root, config=conf)
            else:
                server = NatsCluster(root, sync=sync)
            server.start()
            try:
                bare = Bare(server.url)
                got[sync] = {
                    key: measure(key, bare, replicas, work, size, np.empty(0))  # type: ignore[arg-type]
                    for key in ("publish16", "publish1")
                }
            finally:
                server.stop()
        for key in ("publish16", "publish1"):
            label, unit = KEYS[key]
            always, default = got["always"][key], got["default"][key]
            note = "floor: nats-server's default sync_interval (2 min); bare servers (CI size)"
            out.append(Row(f"R{replicas} sync always: {label}", always, default, unit, note=note))
    return out


@dataclass
class Bare:
    """Where :func:`publish_rate` publishes when no stack runs (CI size)."""

    nats_url: str


def started(running: ExitStack, managers: list[AbstractContextManager[Stack]]) -> list[Stack]:
    """Enter ``managers`` concurrently; each entered one is exited with ``running``."""
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(m.__enter__) for m in managers]
        wait(futures)
    for m, f in zip(managers, futures, strict=True):
        if f.exception() is None:
            running.push(m.__exit__)
    return [f.result() for f in futures]


def log_tails(work: Path, lines: int = 12) -> str:
    """The end of every log of the four stacks (processes and NATS nodes)."""
    out = []
    for log in sorted(work.glob("r*-*/**/*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.relative_to(work)}\n" + "\n".join(tail))
    return "\n".join(out)


@contextmanager
def stack_for(root: Path, replicas: int, sync: str) -> Iterator[Stack]:
    """R1: ``lakehouse up`` with ``supervisor.nats_sync = sync``. R3: a 3-node cluster with
    ``sync`` in every node's config, and the gateway and :data:`KINDS` on it."""
    snapshots = {"vectors": {"snapshot_every": 3600}}  # none during a measurement
    if replicas == 1:
        overrides = {**snapshots, "supervisor": {"nats_sync": sync}}
        stack = Stack(root, overrides=overrides, tuned=False).up({"embed": 0, "query": 0})
        try:
            conf = stack.settings.data_dir / "nats" / "nats-server.conf"
            wrote = conf.read_text() if conf.exists() else ""
            assert ("sync_interval: always" in wrote) == (sync == "always"), wrote
            yield stack
        finally:
            stack.stop()
        return
    monitor = [free_port() for _ in range(3)]

    def node_config(i: int) -> str:
        block = "jetstream { sync_interval: always }\n" if sync == "always" else ""
        return f"{block}http: 127.0.0.1:{monitor[i - 1]}\n"

    cluster = NatsCluster(root / "nats", node_config=node_config).start()
    try:
        for port in monitor:
            js = httpx.get(f"http://127.0.0.1:{port}/varz", timeout=5).json()["jetstream"]
            assert bool(js["config"].get("sync_always")) == (sync == "always"), js
        stack = Stack(root, tuned=False)
        root.mkdir(parents=True, exist_ok=True)
        stack.settings = load_settings(
            root / "none.toml",
            data_dir=root / "data",
            nats={"url": cluster.url, "replicas": replicas},
            storage={"shared": True},  # file:// storage; every process is on this machine
            gateway={"port": free_port()},
            **snapshots,
        )
        stack.base = f"http://127.0.0.1:{stack.settings.gateway.port}"
        asyncio.run(provisioned(stack.settings))  # as `lakehouse up` does before its children
        stack.spawn("gateway", "gateway")
        for kind in KINDS:
            stack.spawn(kind, "worker", kind)
        stack.wait_healthy(timeout=120)
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        cluster.stop()


async def provisioned(settings: Settings) -> None:
    """The streams, created once before the workers start (each would, at once, and R3
    stream creation on a busy machine can outlast a worker's JetStream timeout)."""
    nc = await nats.connect(settings.nats.url.split(","))
    try:
        await provision(nc.jetstream(timeout=60), STREAMS, replicas=settings.nats.replicas)
    finally:
        await nc.close()


def measure(
    key: str, stack: Stack, replicas: int, csv: Path, size: Sizes, data: np.ndarray
) -> float:
    if key == "publish16":
        return asyncio.run(publish_rate(stack, replicas, size.messages, window=16))
    if key == "publish1":
        return asyncio.run(publish_rate(stack, replicas, size.messages // 4, window=1))
    if key == "ingest":
        return ingest_rate(stack, csv, size.rows)
    return vector_rate(stack, data)


async def has_leader(js: JetStreamContext, name: str) -> bool:
    """Whether stream ``name`` has a leader (a single server's stream names that server; an
    info without cluster detail counts as led)."""
    try:
        info = await js.stream_info(name)
    except (TimeoutError, nats.errors.Error):
        return False  # no leader yet to answer
    return info.cluster is None or bool(info.cluster.leader)


def warm_up(stack: Stack, csv: Path) -> None:
    """One small ingest, untimed: a fresh worker's first one pays for imports and caches."""
    with httpx.Client(base_url=stack.base, timeout=600) as c:
        r = c.post("/v1/ingest", params={"name": "warm_up", "wait": 600}, content=csv.read_bytes())
        r.raise_for_status()


async def publish_rate(stack: Stack, replicas: int, count: int, window: int) -> float:
    """``count`` 1 KB messages to a stream of ``replicas`` copies, ``window`` awaiting their
    ack, each with its own Nats-Msg-Id; messages/s. Every one must be stored."""
    nc = await nats.connect(stack.nats_url.split(","))
    js = nc.jetstream(timeout=30)
    name = f"BENCH_DURABILITY_{window}"
    await js.add_stream(
        api.StreamConfig(
            name=name,
            subjects=[f"bench.durability.{window}"],
            storage=api.StorageType.FILE,
            num_replicas=replicas,
        )
    )
    # An R3 stream answers publishes once its own leader is elected (CI: "no responders"
    # right after add_stream on a busy machine).
    await eventually(lambda: has_leader(js, name), timeout=60, interval=0.1, what=f"{name} leader")
    body = bytes(1024)
    slots = asyncio.Semaphore(window)

    async def send(i: int) -> None:
        try:
            await js.publish(f"bench.durability.{window}", body, headers={"Nats-Msg-Id": f"m{i}"})
        finally:
            slots.release()

    try:
        tasks = []
        t = time.perf_counter()
        for i in range(count):
            await slots.acquire()
            tasks.append(asyncio.create_task(send(i)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - t
        stored = (await js.stream_info(name)).state.messages
        assert stored == count, f"{name}: {stored} of {count} stored"
        await js.delete_stream(name)
    finally:
        await nc.close()
    return count / seconds


def ingest_rate(stack: Stack, csv: Path, rows: int) -> float:
    """:data:`FILES` ingests of ``csv`` one after another (each a dataset); rows/s."""
    body = csv.read_bytes()
    with httpx.Client(base_url=stack.base, timeout=3600) as c:
        t = time.perf_counter()
        for _ in range(FILES):
            name = f"durable_{next(SERIAL)}"
            r = c.post("/v1/ingest", params={"name": name, "wait": 3600}, content=body)
            r.raise_for_status()
            assert r.json()["row_count"] == rows, r.json()
        seconds = time.perf_counter() - t
    return FILES * rows / seconds


def vector_rate(stack: Stack, data: np.ndarray, parts: int = 2) -> float:
    """``data`` into a new index of ``parts`` partitions, in batches of 500 published the
    upstream way; vectors/s until the index counts them all."""
    n, dim = data.shape
    with httpx.Client(base_url=stack.base, timeout=60) as c:
        index = f"durable_{next(SERIAL)}"
        new_index(c, {"name": index, "dim": dim, "partitions": parts})

        async def publish() -> None:
            nc = await nats.connect(stack.nats_url.split(","))
            try:
                ids = [f"v{i}" for i in range(n)]
                encoded = batches.batches(ids, data, dim=dim, partitions=parts, max_rows=500)
                await batches.publish(nc.jetstream(), index, encoded, window=16)
            finally:
                await nc.close()

        t = time.perf_counter()
        asyncio.run(publish())
        wait_count(c, index, n, timeout=3600)
        return n / (time.perf_counter() - t)
