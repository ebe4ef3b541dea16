"""Partition internals, in process: filtered (subset) search, exact with and without the int8
mirror and through hnswlib's filter callback, across partitions with one float re-rank, its
label cache and the mirror in snapshots; the id-set wire form; delete and revive; the
reader/writer lock under concurrent searches and adds, and a waiting writer that readers
cannot starve."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lakehouse.devtools.bench.data import clustered
from lakehouse.devtools.servers import wait_until
from lakehouse.platform.errors import BadRequest
from lakehouse.vectors import idsets
from lakehouse.vectors.batches import Batch, partition_of
from lakehouse.vectors.mirror import FILE as MIRROR_FILE
from lakehouse.vectors.mirror import Int8Mirror
from lakehouse.vectors.partition import Partition, RWLock
from lakehouse.vectors.subsets import search_subsets
from schemas.vectors import QUERY_HEADER, IndexSpec


@pytest.mark.parametrize("mirror", [False, True])
def test_subset_search_is_exact(mirror: bool) -> None:
    n, dim = 3000, 48
    data = clustered(n, dim, centers=30)
    spec = IndexSpec(name="unit", dim=dim, partitions=1)
    part = Partition(spec, 0, threads=1, mirror=mirror)
    ids = [f"i{i}" for i in range(n)]
    part.apply(Batch(ids, ["upsert"] * n, data, [None] * n), seq=1)
    # No int8 copy unless asked for.
    assert (part.int8 is not None and part.int8.q8.shape[0] >= n) is mirror
    rng = np.random.default_rng(3)
    allowed = sorted(rng.choice(n, 150, replace=False).tolist())
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    for q in clustered(20, dim, centers=30, sample=4):
        got = [i for i, _, _ in part.search_subset(q, [ids[i] for i in allowed], 10)]
        d = 1 - unit[allowed] @ (q / np.linalg.norm(q))
        want = [ids[allowed[i]] for i in np.argsort(d)[:10]]
        assert got == want


def upserts(ids: list[str], vectors: np.ndarray, meta: list[Any] | None = None) -> Batch:
    return Batch(ids, ["upsert"] * len(ids), vectors, meta or [None] * len(ids))


def deletes(ids: list[str], dim: int) -> Batch:
    return Batch(
        ids, ["delete"] * len(ids), np.zeros((len(ids), dim), np.float32), [None] * len(ids)
    )


class KnnSpy:
    """hnswlib's index with every ``knn_query`` call's keyword arguments recorded."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self.calls: list[dict[str, Any]] = []

    def knn_query(self, *args: Any, **kw: Any) -> Any:
        self.calls.append(kw)
        return self.index.knn_query(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)


def test_large_subset_search_goes_through_the_filter_callback() -> None:
    n, dim = 4000, 32
    data = clustered(n, dim, centers=40)
    part = Partition(IndexSpec(name="unit", dim=dim, partitions=1), 0, threads=1)
    ids = [f"i{i}" for i in range(n)]
    part.apply(upserts(ids, data), seq=1)
    rng = np.random.default_rng(5)
    allowed = set(rng.choice(n, n // 2, replace=False).tolist())
    gone = sorted(allowed)[:200]  # allowed by the filter but deleted since
    part.apply(deletes([ids[i] for i in gone], dim), seq=2)
    live = sorted(allowed - set(gone))
    spy = KnnSpy(part.index)
    part.index = spy
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    scores = []
    for q in clustered(20, dim, centers=40, sample=6):
        got = part.search_subset(q, [ids[i] for i in sorted(allowed)], 10, exact_max=500)
        assert len(got) == 10
        assert {item for item, _, _ in got} <= {ids[i] for i in live}  # filtered, no deleted
        d = 1 - unit[live] @ (q / np.linalg.norm(q))
        want = {ids[live[i]] for i in np.argsort(d)[:10]}
        scores.append(len(want & {item for item, _, _ in got}) / 10)
        # The unfiltered neighbourhood has items outside the subset: the filter mattered.
        nearest = np.argsort(1 - unit @ (q / np.linalg.norm(q)))[:10]
        assert not set(nearest.tolist()) <= set(live)
    assert [callable(c.get("filter")) for c in spy.calls] == [True] * 20
    assert np.mean(scores) >= 0.9


def test_delete_then_revive_an_id(tmp_path: Path) -> None:
    dim = 8
    spec = IndexSpec(name="unit", dim=dim, partitions=1, metric="l2")
    part = Partition(spec, 0, threads=1)
    eye = np.eye(dim, dtype=np.float32)
    part.apply(upserts(["a", "b", "c"], eye[:3], [{"v": 1}, {"v": 1}, {"v": 1}]), seq=1)
    part.apply(deletes(["b"], dim), seq=2)
    assert part.count == 2 and part.live_ids() == ["a", "c"]
    assert "b" not in [item for item, _, _ in part.search(eye[1], 3)]
    assert part.search_subset(eye[1], ["b"], 3) == []
    # The snapshot keeps the deletion; a reloaded partition revives the id in place.
    graph, table = part.save(tmp_path)
    part = Partition.load(spec, 0, graph, table, threads=1)
    assert part.count == 2 and part.covered_seq == 2
    assert "b" not in [item for item, _, _ in part.search(eye[1], 3)]
    part.apply(upserts(["b"], eye[[5]], [{"v": 2}]), seq=3)
    assert part.count == 3 and len(part.items) == 3  # the old label, not a new one
    [(item, distance, meta)] = part.search(eye[5], 1)
    assert (item, meta) == ("b", {"v": 2}) and distance < 1e-6
    assert part.search_subset(eye[5], ["b"], 1)[0][0] == "b"
    # In one batch the last operation on an id wins.
    part.apply(Batch(["c", "c"], ["upsert", "delete"], eye[[2, 2]], [None, None]), seq=4)
    assert part.live_ids() == ["a", "b"]


def test_searches_during_adds_are_consistent() -> None:
    """Readers search the first items while a writer adds many more (resizes included):
    every answer is complete and sorted, finds the queried item itself, and carries its
    metadata; the writer and the readers alternate (a handshake after every batch)."""
    dim, base_n, batches, per_batch = 16, 1000, 12, 500
    spec = IndexSpec(name="unit", dim=dim, partitions=1, ef_search=200)
    part = Partition(spec, 0, threads=1, capacity=base_n)
    base = clustered(base_n, dim, centers=20, seed=1)
    base[:, 0] = 3.0  # a cone of its own: the added items sit in the opposite one
    part.apply(
        upserts([f"b{i}" for i in range(base_n)], base, [{"n": i} for i in range(base_n)]), 1
    )
    extra = clustered(batches * per_batch, dim, centers=20, seed=1, sample=2)
    extra[:, 0] = -3.0  # never nearer to a first item than the other first items
    errors: list[BaseException] = []
    searched = threading.Condition()
    searches = [0]
    done = threading.Event()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not done.is_set():
                i = rng.randrange(base_n)
                hits = part.search(base[i], 10)
                assert len(hits) == 10, hits
                assert [d for _, d, _ in hits] == sorted(d for _, d, _ in hits), hits
                assert (f"b{i}", {"n": i}) in [(item, meta) for item, _, meta in hits], i
                assert all(item.startswith("b") for item, _, _ in hits), hits
                with searched:
                    searches[0] += 1
                    searched.notify_all()
        except BaseException as exc:
            errors.append(exc)
            done.set()

    def writer() -> None:
        try:
            for b in range(batches):
                rows = slice(b * per_batch, (b + 1) * per_batch)
                ids = [f"x{j}" for j in range(rows.start, rows.stop)]
                part.apply(upserts(ids, extra[rows]), seq=2 + b, chunk=64)
                with searched:  # let every reader search against this state
                    want = searches[0] + 3
                    if not searched.wait_for(lambda w=want: searches[0] >= w or done.is_set(), 30):  # type: ignore[misc]
                        raise AssertionError("readers made no progress during the adds")
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in threads if t.is_alive()]
    done.set()  # lets the readers go when the writer is the one stuck
    assert stuck == [], "the writer never got the lock (starved by the readers?)"
    assert errors == []
    assert part.count == base_n + batches * per_batch
    assert searches[0] >= 3 * batches


class WatchedCondition(threading.Condition):
    """A condition that counts the threads blocked in ``wait``."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting += 1  # the lock is held here
        try:
            return super().wait(timeout)
        finally:
            self.waiting -= 1


def test_a_waiting_writer_is_not_starved_by_new_readers() -> None:
    lock = RWLock()
    cond = lock._cond = WatchedCondition()
    order: list[str] = []
    first_in, other_in, release = threading.Event(), threading.Event(), threading.Event()

    def first_reader() -> None:
        with lock.read():
            first_in.set()
            release.wait(30)

    def other_reader() -> None:  # readers share the lock while no writer waits
        with lock.read():
            other_in.set()

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("late reader")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    assert first_in.wait(10)
    threads.append(threading.Thread(target=other_reader))
    threads[-1].start()
    assert other_in.wait(10)  # entered while the first reader holds the lock
    threads.append(threading.Thread(target=writer))
    threads[-1].start()
    wait_until(lambda: cond.waiting == 1, timeout=10, interval=0.01, what="the writer to wait")
    threads.append(threading.Thread(target=late_reader))
    threads[-1].start()
    # The late reader either queues behind the writer or (a starving lock) walks in.
    wait_until(lambda: cond.waiting == 2 or order, timeout=10, interval=0.01, what="late reader")
    assert order == []
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["writer", "late reader"]


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_filtered_search_over_partitions_is_exact_and_reads_few_floats(metric: str) -> None:
    """``search_subsets``: int8 bounds decide almost everything; only the undecided matches
    are read back in float, and the merged answer is the exact top-k of the matches."""
    n, dim, parts, k = 6000, 64, 3, 10
    data = clustered(n, dim, centers=30, seed=5)
    if metric != "cosine":
        data = data * np.random.default_rng(1).uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)
    spec = IndexSpec(name="unit", dim=dim, partitions=parts, metric=metric)
    ids = [f"i{i}" for i in range(n)]
    owner = [partition_of(i, parts) for i in ids]
    partitions = [Partition(spec, p, threads=1, mirror=True) for p in range(parts)]
    for p, part in enumerate(partitions):
        rows = [i for i in range(n) if owner[i] == p]
        part.apply(upserts([ids[i] for i in rows], data[rows]), seq=1)
    read = [0]
    for part in partitions:
        original = part.vectors_of

        def counting(labels: np.ndarray, original: Any = original) -> np.ndarray:
            read[0] += len(labels)
            return original(labels)

        part.vectors_of = counting  # type: ignore[method-assign]
    rng = np.random.default_rng(9)
    queries = clustered(15, dim, centers=30, seed=5, sample=3)
    for size in (1, 7, 150, 2000):
        allowed = sorted(rng.choice(n, size, replace=False).tolist())
        by_part = {p: [ids[i] for i in allowed if owner[i] == p] for p in range(parts)}
        read[0] = 0

        def ids_of(part: Partition, groups: dict[int, list[str]] = by_part) -> list[str]:
            return groups[part.number]

        for q in queries:
            found = search_subsets(partitions, q, ids_of, k)
            merged = sorted((d, item) for hits, _ in found for item, d, _ in hits)[:k]
            sub = data[allowed]
            if metric == "cosine":
                sub = sub / np.linalg.norm(sub, axis=1, keepdims=True)
                d = 1 - sub @ (q / np.linalg.norm(q))
            elif metric == "ip":
                d = 1 - sub @ q
            else:
                d = ((sub - q) ** 2).sum(axis=1)
            want = [ids[allowed[i]] for i in np.argsort(d, kind="stable")[:k]]
            assert [item for _, item in merged] == want, (metric, size)
            assert np.allclose([dist for dist, _ in merged], np.sort(d)[:k], atol=1e-4)
        # About k float reads per query across all partitions, not k per partition.
        assert read[0] <= len(queries) * (min(size, k) + 10), (size, read[0])


def test_subset_labels_are_cached_per_digest_until_the_next_batch() -> None:
    dim = 8
    part = Partition(IndexSpec(name="unit", dim=dim, partitions=1), 0, threads=1, mirror=True)
    eye = np.eye(dim, dtype=np.float32)
    part.apply(upserts([f"i{i}" for i in range(dim)], eye), seq=1)
    calls: list[int] = []

    def ids() -> list[str]:
        calls.append(1)
        return ["i1", "i2", "i3"]

    assert [h[0] for h in part.search_subset(eye[2], ids, 1, key="d1")] == ["i2"]
    assert [h[0] for h in part.search_subset(eye[2], ids, 1, key="d1")] == ["i2"]
    assert len(calls) == 1  # the second search used the cached labels
    part.apply(deletes(["i2"], dim), seq=2)  # any batch makes cached labels stale
    assert [h[0] for h in part.search_subset(eye[2], ids, 3, key="d1")] == ["i1", "i3"]
    assert len(calls) == 2


def test_the_int8_mirror_travels_in_the_snapshot(tmp_path: Path) -> None:
    n, dim = 500, 16
    data = clustered(n, dim, centers=10)
    spec = IndexSpec(name="unit", dim=dim, partitions=1, dataset="d", id_column="id")
    part = Partition(spec, 0, threads=1, mirror=True)
    ids = [f"i{i}" for i in range(n)]
    part.apply(upserts(ids, data), seq=1)
    graph, table = part.save(tmp_path)
    assert (tmp_path / MIRROR_FILE).exists()
    loaded = Partition.load(spec, 0, graph, table, threads=1, mirror=True)
    assert isinstance(loaded.int8, Int8Mirror) and isinstance(part.int8, Int8Mirror)
    assert np.array_equal(loaded.int8.q8[:n], part.int8.q8[:n])
    assert np.array_equal(loaded.int8.qerr[:n], part.int8.qerr[:n])
    q, subset = data[3], ids[::7]
    assert loaded.search_subset(q, subset, 5) == part.search_subset(q, subset, 5)
    (tmp_path / MIRROR_FILE).unlink()  # an older snapshot: the mirror is rebuilt from the graph
    rebuilt = Partition.load(spec, 0, graph, table, threads=1, mirror=True)
    assert rebuilt.int8 is not None
    assert np.allclose(rebuilt.int8.qscale[:n], part.int8.qscale[:n])
    assert rebuilt.search_subset(q, subset, 5) == part.search_subset(q, subset, 5)


def test_id_sets_group_by_partition_and_name_their_bytes() -> None:
    ids = [f"w{i}" for i in range(200)]
    one = idsets.encode(ids, 4)
    groups = idsets.Groups(memoryview(one.blob))
    for p in range(4):
        assert groups.ids(p) == [i for i in ids if partition_of(i, 4) == p]
    assert groups.ids(9) == []
    assert one.count == 200 and idsets.encode(list(ids), 4).digest == one.digest
    assert idsets.encode(ids[:-1], 4).digest != one.digest
    body, headers = idsets.query([0.5, 1.0], 3, None, one)
    assert body[:8] == np.array([0.5, 1.0], "<f4").tobytes() and body[8:] == one.blob
    assert json.loads(headers[QUERY_HEADER]) == {"k": 3, "ef": None, "filter": one.digest}
    with pytest.raises(BadRequest):
        idsets.Groups(memoryview(b"not arrow")).ids(0)
