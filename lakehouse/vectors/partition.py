"""One HNSW partition: hnswlib index + its items (ids and metadata in columnar form, see
``lakehouse.vectors.items``) + the stream sequence it covers.

Filtered search (a resolved id set) scores the set with an int8 copy of its vectors and a
per-vector bound on the quantisation error, then re-ranks in float only the few candidates
the bounds cannot separate: the result is the exact top-k of the set. Reading float vectors
back out of hnswlib costs ~15 µs each (its binding builds Python lists), so the bound keeps
that read to about k vectors.

hnswlib's ``add_items`` is safe alongside other adds but not alongside ``knn_query``, and
``resize_index`` is safe with neither: writes take the write side of a reader/writer lock in
small chunks (so searches interleave during a load), searches take the read side.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse.vectors import mirror as int8
from lakehouse.vectors.batches import Batch
from lakehouse.vectors.items import Items
from lakehouse.vectors.mirror import Int8Mirror
from schemas.vectors import IndexSpec

SPACES = {"cosine": "cosine", "l2": "l2", "ip": "ip"}
SUBSETS_KEPT = 32  # id sets whose labels a partition keeps (per digest), ...
SUBSET_LABELS_KEPT = 1 << 21  # ... and their labels in all (8 B each: 16 MiB)

Ids = Iterable[str] | Callable[[], Iterable[str]]
Hits = list[tuple[str, float, Any]]


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Partition:
    def __init__(
        self,
        spec: IndexSpec,
        number: int,
        *,
        threads: int = 0,
        capacity: int = 1024,
        mirror: bool = False,
    ):
        self.spec = spec
        self.number = number
        self.threads = threads or os.cpu_count() or 1
        self.index = hnswlib.Index(space=SPACES[spec.metric], dim=spec.dim)
        self.index.init_index(max_elements=capacity, M=spec.M, ef_construction=spec.ef_construction)
        self.index.set_ef(spec.ef_search)
        self.items = Items()
        self.deleted: set[int] = set()
        self.covered_seq = 0
        self.changes = 0  # since the last snapshot
        self.version = 0  # bumped by every applied batch: cached subset labels go stale
        self.subsets: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        self.subsets_lock = threading.Lock()
        self.lock = RWLock()
        # Optionally the int8 mirror (``lakehouse.vectors.mirror``): bounded scores of a
        # filtered subset without copying float vectors out of the graph. Without it the
        # exact path reads the subset's float vectors from hnswlib.
        self.int8 = Int8Mirror(spec.dim, capacity) if mirror else None

    @property
    def count(self) -> int:
        return len(self.items) - len(self.deleted)

    def dead(self) -> np.ndarray:
        """Whether each label is deleted, as a mask. Call under the lock."""
        mask = np.zeros(len(self.items), dtype=bool)
        mask[np.fromiter(self.deleted, dtype=np.int64, count=len(self.deleted))] = True
        return mask

    def live_ids(self) -> list[str]:
        with self.lock.read():
            if not self.deleted:
                return self.items.ids()
            return self.items.ids(np.flatnonzero(~self.dead()))

    def memory_bytes(self) -> int:
        """hnswlib's own layout (data + level-0 links), our int8 mirror and the items."""
        per = self.spec.dim * 4 + self.spec.M * 2 * 4 + 4 + 8
        mirror = self.int8.nbytes if self.int8 is not None else 0
        return int(self.index.get_max_elements() * per * 1.1 + mirror + self.items.nbytes())

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        if self.spec.metric == "cosine":
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            return (vectors / norms).astype(np.float32)
        return vectors.astype(np.float32, copy=False)

    def _mirror(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if self.int8 is not None:
            self.int8.grow(self.index.get_max_elements())
            self.int8.put(labels, self.prepare(vectors))

    def apply(self, batch: Batch, seq: int, chunk: int = 2048, threads: int | None = None) -> None:
        """Apply one batch (blocking) on ``threads`` hnswlib threads (default: the
        partition's). Upsert: an existing id keeps its label, gets the new vector and
        metadata. Delete: marked deleted; a later upsert revives it."""
        last: dict[str, int] = {}
        for i, item_id in enumerate(batch.ids):
            last[item_id] = i  # the last op per id in a batch wins
        ups = [i for i in sorted(last.values()) if batch.ops[i] != "delete"]
        dels = [i for i in sorted(last.values()) if batch.ops[i] == "delete"]
        if ups:
            vectors = batch.vectors[ups]
            with self.lock.write():
                labels = self.items.assign([batch.ids[i] for i in ups])
                self.items.set_meta(labels.tolist(), [batch.metadata[i] for i in ups])
                needed = len(self.items)
                if needed > self.index.get_max_elements():
                    grown = int(self.index.get_max_elements() * 1.5)
                    self.index.resize_index(max(needed, grown))
                revive = [int(lab) for lab in labels if int(lab) in self.deleted]
                for lab in revive:
                    self.index.unmark_deleted(lab)
                    self.deleted.discard(lab)
            for start in range(0, len(ups), chunk):
                with self.lock.write():
                    self.index.add_items(
                        vectors[start : start + chunk],
                        labels[start : start + chunk],
                        num_threads=threads or self.threads,
                    )
                    self._mirror(labels[start : start + chunk], vectors[start : start + chunk])
        if dels:
            with self.lock.write():
                gone = [
                    label
                    for label in self.items.find([batch.ids[i] for i in dels]).tolist()
                    if label >= 0 and label not in self.deleted
                ]
                for label in gone:
                    self.index.mark_deleted(label)
                    self.deleted.add(label)
                self.items.drop_meta(gone)
        self.covered_seq = max(self.covered_seq, seq)
        self.changes += len(last)
        self.version += 1

    def search(
        self, query: np.ndarray, k: int, ef: int | None = None
    ) -> list[tuple[str, float, Any]]:
        return self.search_many(query.reshape(1, -1), k, ef)[0]

    def search_many(
        self, queries: np.ndarray, k: int, ef: int | None = None, threads: int | None = None
    ) -> list[Hits]:
        """The top-k of each row of ``queries`` in one ``knn_query`` call (hnswlib spreads a
        batch over ``threads`` threads, default the partition's own, outside the GIL; it starts
        them afresh on every call, so a caller already searching partitions side by side
        passes 1)."""
        with self.lock.read():
            live = self.count
            if live == 0:
                return [[] for _ in range(len(queries))]
            k = min(k, live)
            ef = max(ef or self.spec.ef_search, k)
            if ef != self.index.ef:
                self.index.set_ef(ef)
            while True:
                try:
                    labels, dists = self.index.knn_query(
                        queries, k=k, num_threads=min(threads or self.threads, len(queries))
                    )
                    break
                except RuntimeError:  # too many deleted neighbours for this ef/k
                    if k == 1:
                        return [[] for _ in range(len(queries))]
                    k = max(1, k // 2)
            return [
                self.hits(list(zip(row.tolist(), d.tolist(), strict=True)))
                for row, d in zip(labels, dists, strict=True)
            ]

    def _distances(self, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        if self.spec.metric == "l2":
            diff = vectors - query
            return (diff * diff).sum(axis=1)
        return np.asarray(1.0 - vectors @ query)

    def vectors_of(self, labels: np.ndarray) -> np.ndarray:
        """The stored float vectors (normalised for cosine). hnswlib's numpy return builds
        nested Python lists and converts them; flattening the list form is twice as fast."""
        rows = self.index.get_items(labels, return_type="list")
        flat = itertools.chain.from_iterable(rows)
        return np.fromiter(flat, np.float32, len(rows) * self.spec.dim).reshape(-1, self.spec.dim)

    def labels_of(self, ids: Iterable[str]) -> np.ndarray:
        """Live labels of ``ids`` (unknown and deleted ids left out). Call under the lock."""
        labels = self.items.find(ids if isinstance(ids, list) else list(ids))
        labels = labels[labels >= 0]
        if self.deleted and labels.size:
            dead = np.fromiter(self.deleted, dtype=np.int64, count=len(self.deleted))
            labels = labels[~np.isin(labels, dead)]
        return labels

    def labels_cached(self, ids: Ids, key: str | None) -> np.ndarray:
        """``labels_of(ids)``, kept under ``key`` (a digest of the id set) until the next
        applied batch: a repeated filter skips the id → label lookups. Call under the lock."""
        if key is not None:
            with self.subsets_lock:
                hit = self.subsets.get(key)
                if hit is not None and hit[0] == self.version:
                    self.subsets.move_to_end(key)
                    return hit[1]
        labels = self.labels_of(ids() if callable(ids) else ids)
        if key is not None:
            with self.subsets_lock:
                self.subsets[key] = (self.version, labels)
                self.subsets.move_to_end(key)
                kept = sum(v[1].size for v in self.subsets.values())
                while len(self.subsets) > SUBSETS_KEPT or kept > SUBSET_LABELS_KEPT:
                    kept -= self.subsets.popitem(last=False)[1][1].size
        return labels

    def exact_top(self, q: np.ndarray, labels: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest of ``labels`` by the stored float vectors. Call under the lock."""
        exact = np.empty(labels.size, dtype=np.float32)
        for start in range(0, labels.size, 4096):
            part = labels[start : start + 4096]
            exact[start : start + 4096] = self._distances(q, self.vectors_of(part))
        order = np.argsort(exact, kind="stable")[:k]
        return [(int(labels[i]), float(exact[i])) for i in order]

    def hits(self, pairs: list[tuple[int, float]]) -> Hits:
        """(id, distance, metadata) of labelled distances. Call under the lock."""
        items = self.items
        return [(items.id(lab), d, items.meta(lab)) for lab, d in pairs]

    def search_subset(
        self,
        query: np.ndarray,
        ids: Ids,
        k: int,
        *,
        exact_max: int = 20_000,
        ef: int | None = None,
        key: str | None = None,
    ) -> list[tuple[str, float, Any]]:
        """Top-k among ``ids`` only (a resolved filter; a callable is called only when the
        labels of ``key`` are not cached). Sets up to ``exact_max`` are scored exactly: with
        the int8 mirror, bounded int8 scores and a float re-rank of the few undecided;
        without it, the set's float vectors read from the graph. Larger sets use hnswlib's
        filter callback with a beam widened by the selectivity."""
        with self.lock.read():
            labels = self.labels_cached(ids, key)
            if labels.size == 0:
                return []
            k = min(k, labels.size)
            q = self.prepare(query.reshape(1, -1))[0]
            if labels.size <= exact_max and self.int8 is not None:
                cand = self.int8.bounds(q, labels, k, self.spec.metric)[0]
                pairs = self.exact_top(q, cand, k)
            elif labels.size <= exact_max:
                pairs = self.exact_top(q, labels, k)
            else:
                allowed = set(labels.tolist())
                share = labels.size / max(1, len(self.items))
                beam = int(min(4096, max(ef or self.spec.ef_search, k) / max(share, 1e-3)))
                if beam != self.index.ef:
                    self.index.set_ef(beam)
                found, dists = self.index.knn_query(
                    query.reshape(1, -1), k=k, num_threads=1, filter=allowed.__contains__
                )
                pairs = [(int(a), float(b)) for a, b in zip(found[0], dists[0], strict=True)]
            return self.hits(pairs)

    # ---- snapshots ---------------------------------------------------------------------
    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write the graph and the id/metadata table; returns their paths. With the int8
        mirror, ``mirror.FILE`` beside them too (a load then need not rebuild it)."""
        graph, table = directory / "index.hnsw", directory / "ids.parquet"
        with self.lock.read():
            self.index.save_index(str(graph))
            if self.int8 is not None:
                self.int8.save(directory / int8.FILE, len(self.items))
            ids, meta = self.items.arrow()
            deleted = self.dead()
            seq = self.covered_seq
        pq.write_table(
            pa.table({"id": ids, "deleted": deleted, "metadata": meta}).replace_schema_metadata(
                {"covered_seq": str(seq)}
            ),
            table,
        )
        return graph, table

    @classmethod
    def load(
        cls,
        spec: IndexSpec,
        number: int,
        graph: Path,
        table: Path,
        *,
        threads: int = 0,
        mirror: bool = False,
    ) -> Partition:
        part = cls(spec, number, threads=threads, capacity=1, mirror=mirror)
        part.index = hnswlib.Index(space=SPACES[spec.metric], dim=spec.dim)
        t = pq.read_table(table)
        part.covered_seq = int((t.schema.metadata or {}).get(b"covered_seq", b"0"))
        part.items = Items.of(t.column("id"), t.column("metadata"))
        dead = t.column("deleted").to_numpy(zero_copy_only=False)
        part.deleted = set(np.flatnonzero(dead).tolist())
        part.index.load_index(str(graph), max_elements=max(1024, len(part.items)))
        part.index.set_ef(spec.ef_search)
        if not mirror:
            return part
        rows = part.index.get_max_elements()
        saved = Int8Mirror.load(graph.parent / int8.FILE, len(part.items), spec.dim, rows)
        if saved is not None:
            part.int8 = saved
            return part
        part.int8 = Int8Mirror(spec.dim, rows)
        live = np.flatnonzero(~dead)
        for start in range(0, live.size, 8192):
            chunk = live[start : start + 8192]
            part._mirror(chunk, part.vectors_of(chunk))
        return part
