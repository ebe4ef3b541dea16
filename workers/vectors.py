"""Vector worker: owns HNSW partitions by lease, applies their batch streams, snapshots them,
and answers searches for the partitions it owns.

Each owned partition follows ``lakehouse.vectors.<index>.<p>`` from the sequence after its
newest snapshot through its own ephemeral pull consumer, fetching a few batches at a time: a
load of millions of vectors never buffers more than ``vectors.fetch_batch`` batches in the
client. Partitions apply in parallel (one task each, adds on all cores); a partition's
reader/writer lock keeps searches correct during loads. A worker that dies stops renewing its
leases; another worker takes the partitions over within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from lakehouse.platform import faults, metrics
from lakehouse.platform.errors import BadRequest, NotFound
from lakehouse.platform.leases import Leases
from lakehouse.platform.natsauth import Uses
from lakehouse.platform.rpc import parse
from lakehouse.platform.runtime import Serve, Worker, stop_task
from lakehouse.platform.storage import keys
from lakehouse.vectors.batcher import Batcher
from lakehouse.vectors.batches import decode
from lakehouse.vectors.idsets import Groups
from lakehouse.vectors.indexes import ids_digest, list_indexes
from lakehouse.vectors.mirror import FILE as MIRROR_FILE
from lakehouse.vectors.partition import Hits, Partition
from lakehouse.vectors.subsets import search_subsets
from schemas import subjects as S
from schemas.vectors import QUERY_HEADER, IndexSpec, SearchRequest

log = logging.getLogger("workers.vectors")

SEARCHING = 1.0
"""Seconds after a search during which vector loads yield the cores to searches."""


Reply = dict[str, Any]
"""A :class:`PartitionReply` in its wire form, built as a dict: a pydantic model per hit
cost more than the search (40 per query at 4 partitions and k=10)."""


def wire(stats: Reply, hits: Hits, took_ms: float) -> Reply:
    """``stats`` (:meth:`VectorWorker.stats`) with ``hits`` and the time they took."""
    out = dict(stats)
    out["hits"] = [{"id": i, "distance": d, "metadata": m} for i, d, m in hits]
    out["took_ms"] = round(took_ms, 3)
    return out


@dataclass(frozen=True)
class Query:
    """One unfiltered search waiting for its batch."""

    vector: np.ndarray
    k: int
    ef: int | None


@dataclass
class Owned:
    spec: IndexSpec
    part: Partition
    follower: asyncio.Task[None] | None = None
    stopped: bool = False  # ends the follower's retry loop (see stop_task)
    last_snapshot: float = field(default_factory=time.monotonic)
    bad_batches: int = 0


class VectorWorker(Worker):
    kind = "vectors"
    uses = Uses(
        reads=(S.STREAM_INDEXES,),
        follows=(S.STREAM_VECTORS,),
        subscribes=(S.all_under(S.INDEXES_PREFIX),),
        buckets=(S.KV_LEASES,),
    )

    def serves(self) -> list[Serve]:
        return [Serve(f"{S.SEARCH_PREFIX}.*", self.search, queue=False, concurrency=64)]

    async def setup(self) -> None:
        vs = self.rt.settings.vectors
        self.owned: dict[str, Owned] = {}
        self.tmp = (self.rt.settings.data_dir / "tmp" / "vectors" / self.rt.instance).resolve()
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.leases = Leases(
            self.rt.js, self.rt.instance, vs.lease_ttl, self.rt.settings.nats.replicas
        )
        await self.leases.open()
        self.wake = asyncio.Event()
        self.closing = False
        self.pool_size = os.cpu_count() or 2
        self.pool = ThreadPoolExecutor(self.pool_size, thread_name_prefix="search")
        # Filtered searches score their partitions' matches here (never waits on anything, so
        # a search on ``pool`` may wait on it).
        self.bound_pool = ThreadPoolExecutor(self.pool_size, thread_name_prefix="bounds")
        # Unfiltered searches of an index arriving together are answered together.
        self.batchers: dict[str, Batcher[Query, list[Reply]]] = {}
        # While searches arrive, vector loads yield: one batch at a time on one hnswlib
        # thread, the other cores left to the searches (see on_batch).
        self.searched_at = -math.inf
        self.yielding = asyncio.Semaphore(1)

        async def on_index_change(msg: Msg) -> None:
            self.wake.set()  # a new or deleted index: rebalance now, not at the next tick

        self.index_sub = await self.rt.nc.subscribe(
            S.all_under(S.INDEXES_PREFIX), cb=on_index_change
        )
        self.balancer = asyncio.create_task(self.balance_loop())

    async def teardown(self) -> None:
        await self.index_sub.unsubscribe()
        self.closing = True  # the balancer's loop ends at its next turn, or by stop_task
        self.wake.set()
        await stop_task(self.balancer)
        # All partitions at once: each one's consumer delete and lease release is a JetStream
        # API round trip, slow when the server is busy (seconds each over hundreds).
        slots = asyncio.Semaphore(8)

        async def stop(key: str) -> None:
            async with slots:
                await self.stop_partition(key, snapshot=True)

        await asyncio.gather(*(stop(key) for key in list(self.owned)))
        for batcher in self.batchers.values():
            await batcher.close()
        await self.leases.leave()
        self.export_sizes()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.bound_pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- ownership ---------------------------------------------------------------------
    async def balance_loop(self) -> None:
        every = self.rt.settings.vectors.lease_ttl / 3
        while not self.closing:
            try:
                await self.balance()
            except Exception as exc:
                log.warning("balance failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            self.export_sizes()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), every)

    def preference(self, key: str) -> int:
        """Rendezvous hashing: each worker prefers a stable subset of the partitions."""
        return int(
            hashlib.blake2b(f"{self.rt.instance}/{key}".encode(), digest_size=8).hexdigest(), 16
        )

    async def keep_leases(self) -> None:
        """Heartbeat and renew every owned partition's lease; drop the ones lost."""
        await self.leases.heartbeat()
        for key in list(self.owned):
            if not await self.leases.renew(key):
                log.warning("lease lost", extra={"partition": key})
                await self.stop_partition(key, snapshot=False, release=False)

    async def balance(self) -> None:
        specs = {s.name: s for s in await list_indexes(self.rt.js)}
        for key, owned in list(self.owned.items()):
            spec = specs.get(owned.spec.name)
            if spec is None or spec.created_at != owned.spec.created_at:
                await self.stop_partition(key, snapshot=False)  # index deleted (or re-created)
        await self.keep_leases()
        keys = {f"{n}.{p}": (s, p) for n, s in specs.items() for p in range(s.partitions)}
        members = await self.leases.members()
        target = math.ceil(len(keys) / max(1, len(members)))
        if len(self.owned) > target:
            extras = sorted(self.owned, key=self.preference)[: len(self.owned) - target]
            for key in extras:
                await self.stop_partition(key, snapshot=True)
        for key in sorted(set(keys) - set(self.owned), key=self.preference, reverse=True):
            if len(self.owned) >= target:
                break
            if await self.leases.owner(key) is None and await self.leases.acquire(key):
                spec, number = keys[key]
                try:
                    await self.start_partition(key, spec, number)
                except Exception as exc:
                    log.error("partition start failed", extra={"partition": key, "error": str(exc)})
                    await self.leases.release(key)
                # Loading a large partition takes seconds: keep the others' leases meanwhile.
                await self.keep_leases()

    def export_sizes(self) -> None:
        """The owned partitions' sizes, as metrics (owner: this instance)."""
        metrics.vector_partitions(
            self.rt.instance,
            {
                (o.spec.name, o.part.number): (o.part.count, o.part.memory_bytes())
                for o in self.owned.values()
            },
        )

    async def start_partition(self, key: str, spec: IndexSpec, number: int) -> None:
        started = time.monotonic()
        part = await self.load_snapshot(spec, number)
        owned = Owned(spec, part)

        owned.follower = asyncio.create_task(self.follow(owned), name=f"follow {key}")
        self.owned[key] = owned
        log.info(
            "partition owned",
            extra={
                "partition": key,
                "from_seq": part.covered_seq + 1,
                "count": part.count,
                "load_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )

    async def stop_partition(self, key: str, *, snapshot: bool, release: bool = True) -> None:
        owned = self.owned.pop(key, None)
        if owned is None:
            return
        owned.stopped = True
        if owned.follower is not None:
            await stop_task(owned.follower)
        if snapshot and owned.part.changes:
            await self.snapshot(owned)
        if release:
            await self.leases.release(key)
        log.info("partition released", extra={"partition": key, "snapshot": snapshot})

    # ---- applying batches ----------------------------------------------------------------
    async def follow(self, owned: Owned) -> None:
        """Fetch and apply the partition's batches forever, from ``covered_seq + 1``.

        The consumer is re-created from the covered sequence when it disappears (a restarted
        nats-server forgets memory-stored ephemeral consumers) or any fetch fails.
        """
        subject = S.vectors(owned.spec.name, owned.part.number)
        vs = self.rt.settings.vectors
        while not owned.stopped:
            name = f"vec_{owned.spec.name}_{owned.part.number}_{uuid.uuid4().hex[:12]}"
            sub = None
            try:
                cfg = ConsumerConfig(
                    name=name,
                    filter_subject=subject,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=owned.part.covered_seq + 1,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=max(30.0, 6 * vs.lease_ttl),
                    mem_storage=True,
                )
                await self.rt.js.add_consumer(S.STREAM_VECTORS, cfg)
                sub = await self.rt.js.pull_subscribe_bind(name=name, stream=S.STREAM_VECTORS)
                while not owned.stopped:
                    try:
                        msgs = await sub.fetch(vs.fetch_batch, timeout=vs.fetch_wait)
                    except NatsTimeout:
                        await sub.consumer_info()  # raises NotFoundError if the consumer is gone
                        continue
                    for msg in msgs:
                        await self.on_batch(owned, msg)
            except asyncio.CancelledError:
                # A courtesy: the server drops it anyway once inactive (inactive_threshold).
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.rt.js.delete_consumer(S.STREAM_VECTORS, name), 2)
                raise
            except Exception as exc:
                log.warning(
                    "partition consumer lost; re-creating",
                    extra={
                        "partition": f"{owned.spec.name}.{owned.part.number}",
                        "from_seq": owned.part.covered_seq + 1,
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )
                await asyncio.sleep(0.5)
            finally:
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()

    async def on_batch(self, owned: Owned, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        part = owned.part
        if seq <= part.covered_seq:
            return
        try:
            batch = decode(msg.data, owned.spec.dim)
        except BadRequest as exc:
            owned.bad_batches += 1
            part.covered_seq = seq
            log.error(
                "bad vector batch skipped",
                extra={"subject": msg.subject, "seq": seq, "error": exc.detail},
            )
            await self.rt.publish_dead_letter(msg, str(exc.detail))
            return
        vs = self.rt.settings.vectors
        if time.monotonic() - self.searched_at < SEARCHING:
            # Searching: the load takes one core (measured at 8 clients during a 100K load
            # on 2 cores, every partition adding on all cores put search p99 at 5.7× idle).
            async with self.yielding:
                await asyncio.to_thread(part.apply, batch, seq, vs.add_chunk, 1)
        else:
            await asyncio.to_thread(part.apply, batch, seq, vs.add_chunk)
        due = time.monotonic() - owned.last_snapshot >= vs.snapshot_every
        if due and part.changes >= vs.snapshot_min_changes:
            await self.snapshot(owned)

    # ---- snapshots ---------------------------------------------------------------------
    async def snapshot(self, owned: Owned) -> None:
        spec, part = owned.spec, owned.part
        prefix = keys.index_snapshots(spec.name, part.number)
        work = self.tmp / f"{spec.name}-{part.number}"
        work.mkdir(parents=True, exist_ok=True)
        try:
            seq = part.covered_seq
            graph, table = await asyncio.to_thread(part.save, work)
            gkey, tkey = f"{prefix}{seq}/index.hnsw", f"{prefix}{seq}/ids.parquet"
            await self.rt.storage.put_file(gkey, graph)
            await self.rt.storage.put_file(tkey, table)
            pointer = {"seq": seq, "graph": gkey, "table": tkey, "created_at": spec.created_at}
            if (work / MIRROR_FILE).exists():
                mkey = f"{prefix}{seq}/{MIRROR_FILE}"
                await self.rt.storage.put_file(mkey, work / MIRROR_FILE)
                pointer["mirror"] = mkey
            faults.point(self.rt.settings, "vectors.mid_snapshot")
            # The pointer is written last: a crash before it leaves the previous one in use.
            await self.rt.storage.put_bytes(
                f"{prefix}latest.json", json.dumps(pointer, default=str).encode()
            )
            part.changes = 0
            owned.last_snapshot = time.monotonic()
            for obj in (await self.rt.storage.list(prefix)).objects:
                if not obj.key.startswith(f"{prefix}{seq}/") and not obj.key.endswith(
                    "latest.json"
                ):
                    await self.rt.storage.delete(obj.key)
            log.info(
                "snapshot written", extra={"partition": f"{spec.name}.{part.number}", "seq": seq}
            )
        except Exception as exc:
            log.error(
                "snapshot failed",
                extra={"partition": f"{spec.name}.{part.number}", "error": str(exc)},
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def load_snapshot(self, spec: IndexSpec, number: int) -> Partition:
        threads = self.rt.settings.vectors.threads
        mirror = self.rt.settings.vectors.mirror_for(spec.dataset)

        def fresh() -> Partition:  # replay the partition's whole stream
            return Partition(spec, number, threads=threads, mirror=mirror)

        prefix = keys.index_snapshots(spec.name, number)
        try:
            pointer = json.loads(await self.rt.storage.get_bytes(f"{prefix}latest.json"))
        except NotFound:
            return fresh()
        if str(pointer.get("created_at")) != str(spec.created_at):  # an older index's snapshot
            return fresh()
        work = self.tmp / f"load-{spec.name}-{number}"
        work.mkdir(parents=True, exist_ok=True)
        try:
            graph, table = work / "index.hnsw", work / "ids.parquet"
            await self.rt.storage.get_file(pointer["graph"], graph)
            await self.rt.storage.get_file(pointer["table"], table)
            if mirror and pointer.get("mirror"):
                await self.rt.storage.get_file(pointer["mirror"], work / MIRROR_FILE)
            return await asyncio.to_thread(
                Partition.load, spec, number, graph, table, threads=threads, mirror=mirror
            )
        except Exception as exc:
            log.error("snapshot unusable; replaying the whole stream", extra={"error": str(exc)})
            return fresh()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # ---- search ------------------------------------------------------------------------
    async def search(self, msg: Msg) -> bytes:
        index = msg.subject.rsplit(".", 1)[1]
        binary = (msg.headers or {}).get(QUERY_HEADER)
        groups: Groups | None = None
        digest: str | None = None
        mine = [o for o in self.owned.values() if o.spec.name == index]
        if binary is not None:
            params = json.loads(binary)
            req = SearchRequest.model_construct(
                vector=[],
                k=int(params.get("k") or 10),
                ef=params.get("ef"),
                op="search",
                allowed_ids=None,
            )
            digest = params.get("filter")
        else:
            req = parse(SearchRequest, msg.data)
        if not mine:
            return b"[]"
        if req.op == "stats":
            replies = [self.stats(o) for o in mine]
        elif req.op == "ids":
            replies = await asyncio.to_thread(lambda: [self.id_set(o) for o in mine])
        else:
            self.searched_at = time.monotonic()  # stats and id sets are not searches
            dim = mine[0].spec.dim
            if binary is not None:  # float32 bytes, then (filtered) the id set
                data = memoryview(msg.data)
                size = len(data) if digest is None else min(len(data), dim * 4)
                size -= size % 4
                query = np.frombuffer(data[:size], dtype="<f4").astype(np.float32)
                if digest is not None:
                    groups = Groups(data[size:])
            else:
                query = np.asarray(req.vector, dtype=np.float32)
            if query.shape != (dim,):
                raise BadRequest(
                    f"query vector has dimension {query.size}; index {index!r} has {dim}"
                )
            loop = asyncio.get_running_loop()
            if groups is not None:  # one task: the partitions share one float re-rank
                replies = await loop.run_in_executor(
                    self.pool, self.search_filtered, mine, query, req, groups, digest
                )
            elif req.allowed_ids is not None:
                allowed = req.allowed_ids
                replies = await asyncio.gather(
                    *(
                        loop.run_in_executor(self.pool, self.search_allowed, o, query, req, allowed)
                        for o in mine
                    )
                )
            else:
                batcher = self.batchers.get(index)
                if batcher is None:
                    batcher = self.batchers[index] = Batcher(
                        functools.partial(self.search_batch, index),
                        most=self.rt.settings.vectors.search_batch,
                    )
                replies = await batcher.submit(Query(query, req.k, req.ef))
        return json.dumps(replies).encode()

    async def search_batch(self, index: str, batch: list[Query]) -> list[list[Reply]]:
        """Searches of ``index`` that arrived together: per beam width, one ``knn_query`` of
        all their vectors per partition, the partitions concurrently on the search pool
        (hnswlib releases the GIL), each search given its own k of the hits."""
        metrics.search_batch(index, len(batch))
        mine = [o for o in self.owned.values() if o.spec.name == index]
        out: list[list[Reply]] = [[] for _ in batch]
        by_ef: dict[int | None, list[int]] = {}
        for i, q in enumerate(batch):
            by_ef.setdefault(q.ef, []).append(i)
        loop = asyncio.get_running_loop()
        # The partitions run side by side on the pool; hnswlib's own threads only for what
        # is left of the cores (measured, 4 partitions on 2 cores: ~8% less time per query
        # with one thread each than with two).
        threads = max(1, self.pool_size // max(1, len(mine)))
        for ef, rows in by_ef.items():
            queries = np.stack([batch[i].vector for i in rows])
            k = max(batch[i].k for i in rows)
            found = await asyncio.gather(
                *(
                    loop.run_in_executor(self.pool, self.search_many, o, queries, k, ef, threads)
                    for o in mine
                )
            )
            for owned, (hits, ms) in zip(mine, found, strict=True):
                stats = self.stats(owned)
                for j, i in enumerate(rows):
                    out[i].append(wire(stats, hits[j][: batch[i].k], ms))
        return out

    def search_many(
        self, owned: Owned, queries: np.ndarray, k: int, ef: int | None, threads: int
    ) -> tuple[list[Hits], float]:
        started = time.perf_counter()
        hits = owned.part.search_many(queries, k, ef, threads)
        return hits, (time.perf_counter() - started) * 1000

    def search_allowed(
        self, owned: Owned, query: np.ndarray, req: SearchRequest, allowed: list[str]
    ) -> Reply:
        """A JSON request's search among ``allowed`` ids (``SearchRequest.allowed_ids``)."""
        started = time.perf_counter()
        hits = owned.part.search_subset(query, allowed, req.k, ef=req.ef)
        return wire(self.stats(owned), hits, (time.perf_counter() - started) * 1000)

    def search_filtered(
        self,
        mine: list[Owned],
        query: np.ndarray,
        req: SearchRequest,
        groups: Groups,
        key: str | None,
    ) -> list[Reply]:
        found = search_subsets(
            [o.part for o in mine],
            query,
            lambda part: groups.ids(part.number),
            req.k,
            key=key,
            ef=req.ef,
            # Threads pay off once the matches are thousands (~10 B per id in the set).
            each=self.bound_pool.map if len(groups.blob) > 32_768 else map,
        )
        return [wire(self.stats(o), hits, ms) for o, (hits, ms) in zip(mine, found, strict=True)]

    def id_set(self, owned: Owned) -> Reply:
        reply = self.stats(owned)
        reply["ids_digest"] = ids_digest(owned.part.live_ids())
        return reply

    def stats(self, owned: Owned) -> Reply:
        """The partition's :class:`PartitionReply` without hits."""
        part = owned.part
        return {
            "partition": part.number,
            "owner": self.rt.instance,
            "hits": [],
            "took_ms": 0.0,
            "count": part.count,
            "covered_seq": part.covered_seq,
            "memory_bytes": part.memory_bytes(),
            "ids_digest": None,
        }
