"""One HNSW partition: hnswlib index + string ids + metadata + the stream sequence it covers.

hnswlib's ``add_items`` is safe alongside other adds but not alongside ``knn_query``, and
``resize_index`` is safe with neither: writes take the write side of a reader/writer lock in
small chunks (so searches interleave during a load), searches take the read side.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse.vectors import Batch
from schemas.vectors import IndexSpec

SPACES = {"cosine": "cosine", "l2": "l2", "ip": "ip"}


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
    def __init__(self, spec: IndexSpec, number: int, *, threads: int = 0, capacity: int = 1024):
        self.spec = spec
        self.number = number
        self.threads = threads or os.cpu_count() or 1
        self.index = hnswlib.Index(space=SPACES[spec.metric], dim=spec.dim)
        self.index.init_index(max_elements=capacity, M=spec.M, ef_construction=spec.ef_construction)
        self.index.set_ef(spec.ef_search)
        self.labels: dict[str, int] = {}
        self.ids: list[str] = []
        self.meta: dict[int, dict[str, Any] | None] = {}
        self.deleted: set[int] = set()
        self.covered_seq = 0
        self.changes = 0  # since the last snapshot
        self.lock = RWLock()

    @property
    def count(self) -> int:
        return len(self.ids) - len(self.deleted)

    def memory_bytes(self) -> int:
        """hnswlib's own layout: per element data + level-0 links, plus our id map."""
        per = self.spec.dim * 4 + self.spec.M * 2 * 4 + 4 + 8
        return int(self.index.get_max_elements() * per * 1.1 + len(self.ids) * 120)

    def apply(self, batch: Batch, seq: int, chunk: int = 2048) -> None:
        """Apply one batch (blocking). Upsert: an existing id keeps its label, gets the new
        vector and metadata. Delete: marked deleted; a later upsert revives it."""
        last: dict[str, int] = {}
        for i, item_id in enumerate(batch.ids):
            last[item_id] = i  # the last op per id in a batch wins
        ups = [i for i in sorted(last.values()) if batch.ops[i] != "delete"]
        dels = [i for i in sorted(last.values()) if batch.ops[i] == "delete"]
        if ups:
            labels = np.empty(len(ups), dtype=np.int64)
            for j, i in enumerate(ups):
                item_id = batch.ids[i]
                label = self.labels.get(item_id)
                if label is None:
                    label = len(self.ids)
                    self.ids.append(item_id)
                    self.labels[item_id] = label
                labels[j] = label
            vectors = batch.vectors[ups]
            with self.lock.write():
                needed = len(self.ids)
                if needed > self.index.get_max_elements():
                    self.index.resize_index(max(needed, 2 * self.index.get_max_elements()))
                revive = [int(lab) for lab in labels if int(lab) in self.deleted]
                for lab in revive:
                    self.index.unmark_deleted(lab)
                    self.deleted.discard(lab)
            for start in range(0, len(ups), chunk):
                with self.lock.write():
                    self.index.add_items(
                        vectors[start : start + chunk],
                        labels[start : start + chunk],
                        num_threads=self.threads,
                    )
            for j, i in enumerate(ups):
                self.meta[int(labels[j])] = batch.metadata[i]
        if dels:
            with self.lock.write():
                for i in dels:
                    label = self.labels.get(batch.ids[i])
                    if label is not None and label not in self.deleted:
                        self.index.mark_deleted(label)
                        self.deleted.add(label)
                        self.meta.pop(label, None)
        self.covered_seq = max(self.covered_seq, seq)
        self.changes += len(last)

    def search(
        self, query: np.ndarray, k: int, ef: int | None = None
    ) -> list[tuple[str, float, Any]]:
        with self.lock.read():
            live = self.count
            if live == 0:
                return []
            k = min(k, live)
            ef = max(ef or self.spec.ef_search, k)
            if ef != self.index.ef:
                self.index.set_ef(ef)
            while True:
                try:
                    labels, dists = self.index.knn_query(query.reshape(1, -1), k=k, num_threads=1)
                    break
                except RuntimeError:  # too many deleted neighbours for this ef/k
                    if k == 1:
                        return []
                    k = max(1, k // 2)
        return [
            (self.ids[int(lab)], float(d), self.meta.get(int(lab)))
            for lab, d in zip(labels[0], dists[0], strict=True)
        ]

    # ---- snapshots ---------------------------------------------------------------------
    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write the graph and the id/metadata table; returns their paths."""
        graph, table = directory / "index.hnsw", directory / "ids.parquet"
        with self.lock.read():
            self.index.save_index(str(graph))
            ids = list(self.ids)
            deleted = [i in self.deleted for i in range(len(ids))]
            meta = [
                None if self.meta.get(i) is None else json.dumps(self.meta[i])
                for i in range(len(ids))
            ]
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
        cls, spec: IndexSpec, number: int, graph: Path, table: Path, *, threads: int = 0
    ) -> Partition:
        part = cls(spec, number, threads=threads, capacity=1)
        part.index = hnswlib.Index(space=SPACES[spec.metric], dim=spec.dim)
        t = pq.read_table(table)
        part.covered_seq = int((t.schema.metadata or {}).get(b"covered_seq", b"0"))
        part.ids = t.column("id").to_pylist()
        part.labels = {item_id: i for i, item_id in enumerate(part.ids)}
        part.deleted = {i for i, d in enumerate(t.column("deleted").to_pylist()) if d}
        part.meta = {
            i: (None if m is None else json.loads(m))
            for i, m in enumerate(t.column("metadata").to_pylist())
            if i not in part.deleted
        }
        part.index.load_index(str(graph), max_elements=max(1024, len(part.ids)))
        part.index.set_ef(spec.ef_search)
        return part
