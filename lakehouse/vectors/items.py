"""A partition's items in columnar form: the id of every label, the label of every id, and
each item's metadata as compact JSON, in numpy buffers rather than Python objects per vector
(at 384-d a dict per item's metadata cost more memory than its vector).

Labels are dense (0, 1, 2, … in order of first arrival); an id keeps its label for the life
of the partition (the partition tracks deletions). Ids live in one UTF-8 buffer with offsets
(an Arrow large-string layout, so snapshots and bulk comparisons use it without copying).
The label of an id is found through Python's 64-bit string hash: sorted numpy arrays for the
bulk, a dict for the newest entries until they are merged in, and every match is confirmed
against the stored id, so a hash collision costs a detour (``overflow``), never a wrong label.

Not thread-safe by itself: :class:`Items` changes only through :meth:`assign` and
:meth:`set_meta`, which the partition calls under its write lock; readers (``find``, ``id``,
``meta``) run under the read lock. Buffers grow by copying, so a reference a reader holds
stays valid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MERGE_AT = 1 << 16  # pending hash entries before they are merged into the sorted arrays
_hash = hash  # of an id (tests swap in a colliding one)


def _grown(arr: np.ndarray, needed: int) -> np.ndarray:
    """``arr`` itself when it holds ``needed`` elements, else a copy with room to spare (×1.5
    amortises the copies; the unused tail costs no memory until it is written)."""
    if needed <= arr.size:
        return arr
    bigger = np.empty(max(needed, int(arr.size * 1.5), 64), dtype=arr.dtype)
    bigger[: arr.size] = arr
    return bigger


class Strings:
    """Append-only UTF-8 strings: one byte buffer and ``len + 1`` offsets."""

    def __init__(self) -> None:
        self.data = np.empty(0, dtype=np.uint8)
        self.offsets = np.zeros(1, dtype=np.int64)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def used(self) -> int:
        return int(self.offsets[self.count])

    def extend(self, encoded: Sequence[bytes]) -> None:
        if not encoded:
            return
        blob = b"".join(encoded)
        start, n = self.used, self.count
        self.data = _grown(self.data, start + len(blob))
        self.data[start : start + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        offsets = _grown(self.offsets, n + 1 + len(encoded))
        offsets[n + 1 : n + 1 + len(encoded)] = start + np.cumsum(lengths)
        self.offsets = offsets
        self.count = n + len(encoded)

    def get(self, i: int) -> bytes:
        return self.data[self.offsets[i] : self.offsets[i + 1]].tobytes()

    def arrow(self) -> pa.LargeStringArray:
        """All strings as an Arrow array over these buffers (no copy)."""
        n = self.count
        return pa.LargeStringArray.from_buffers(
            n, pa.py_buffer(self.offsets[: n + 1]), pa.py_buffer(self.data[: self.used])
        )

    @classmethod
    def of(cls, column: pa.Array | pa.ChunkedArray) -> Strings:
        """From an Arrow string column without nulls (its buffers, copied once)."""
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        arr = arr.cast(pa.large_string())
        out = cls()
        n = len(arr)
        if n == 0:
            return out
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
        base = int(offsets[0])
        out.offsets = (offsets - base).astype(np.int64)
        used = int(out.offsets[-1])
        data = arr.buffers()[2]
        out.data = np.frombuffer(data, dtype=np.uint8)[base : base + used].copy()
        out.count = n
        return out

    def nbytes(self) -> int:
        return int(self.data.nbytes + self.offsets.nbytes)


class Items:
    def __init__(self) -> None:
        self.strings = Strings()  # label -> id
        self.keys = np.empty(0, dtype=np.int64)  # sorted id hashes ...
        self.vals = np.empty(0, dtype=np.int64)  # ... and their labels
        self.pending: dict[int, int] = {}  # newest hash -> label, merged at MERGE_AT
        self.overflow: dict[str, int] = {}  # ids whose hash another id already has
        self.blobs = Strings()  # metadata JSON, append-only ...
        self.ref = np.empty(0, dtype=np.int32)  # ... blob of each label (-1: none)
        self.live_meta = 0  # bytes of blobs some label refers to

    def __len__(self) -> int:
        return len(self.strings)

    def id(self, label: int) -> str:
        return self.strings.get(label).decode()

    def ids(self, labels: Sequence[int] | np.ndarray | None = None) -> list[str]:
        arr = self.strings.arrow()
        if labels is not None:
            arr = arr.take(pa.array(np.asarray(labels, dtype=np.int64)))
        return list(arr.to_pylist())

    # ---- lookups -----------------------------------------------------------------------
    def find(self, ids: Sequence[str]) -> np.ndarray:
        """The label of each id, -1 for ids never assigned."""
        return self._lookup(ids)[0]

    def _lookup(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The label of each id (-1: never assigned), its hash, and whether some id already
        holds that hash (``assign`` sends a new id with a known hash to ``overflow``)."""
        n = len(ids)
        hashes = np.fromiter(map(_hash, ids), dtype=np.int64, count=n)
        out = np.full(n, -1, dtype=np.int64)
        if self.keys.size:
            pos = np.searchsorted(self.keys, hashes)
            pos[pos == self.keys.size] = 0
            hit = self.keys[pos] == hashes
            out[hit] = self.vals[pos[hit]]
        if self.pending:
            get = self.pending.get
            for i in np.flatnonzero(out < 0).tolist():
                label = get(int(hashes[i]))
                if label is not None:
                    out[i] = label
        known = out >= 0
        found = np.flatnonzero(known)
        if found.size:  # confirm against the stored ids
            stored = self.strings.arrow().take(pa.array(out[found]))
            given = pa.array([ids[i] for i in found.tolist()], type=pa.large_string())
            same = pc.equal(stored, given).to_numpy(zero_copy_only=False)
            for i in found[~same].tolist():  # a hash shared with another id
                out[i] = self.overflow.get(ids[i], -1)
        return out, hashes, known

    def assign(self, ids: Sequence[str]) -> np.ndarray:
        """The label of each id; ids never seen get the next labels, in order (writer)."""
        labels, hashes, known = self._lookup(ids)
        new = np.flatnonzero(labels < 0).tolist()
        if not new:
            return labels
        fresh: dict[str, int] = {}
        encoded: list[bytes] = []
        n = len(self.strings)
        for i in new:
            item_id = ids[i]
            label = fresh.get(item_id)
            if label is None:
                label = fresh[item_id] = n + len(encoded)
                encoded.append(item_id.encode())
                h = int(hashes[i])
                if known[i] or h in self.pending:  # another id holds this hash
                    self.overflow[item_id] = label
                else:
                    self.pending[h] = label
            labels[i] = label
        self.strings.extend(encoded)
        self.ref = _grown(self.ref, len(self.strings))
        self.ref[n : len(self.strings)] = -1
        if len(self.pending) >= MERGE_AT:
            self.merge()
        return labels

    def merge(self) -> None:
        """Fold the pending hash entries into the sorted arrays (writer)."""
        if not self.pending:
            return
        keys = np.concatenate([self.keys, np.fromiter(self.pending, dtype=np.int64)])
        vals = np.concatenate([self.vals, np.fromiter(self.pending.values(), dtype=np.int64)])
        order = np.argsort(keys, kind="stable")
        self.keys, self.vals = keys[order], vals[order]
        self.pending = {}

    # ---- metadata ----------------------------------------------------------------------
    def set_meta(self, labels: Sequence[int], metas: Sequence[dict[str, Any] | None]) -> None:
        """Replace the metadata of ``labels`` (None: none) (writer)."""
        encoded: list[bytes] = []
        first = len(self.blobs)
        for label, meta in zip(labels, metas, strict=True):
            old = int(self.ref[label])
            if old >= 0:
                self.live_meta -= int(self.blobs.offsets[old + 1] - self.blobs.offsets[old])
            if meta is None:
                self.ref[label] = -1
                continue
            blob = json.dumps(meta, separators=(",", ":")).encode()
            self.ref[label] = first + len(encoded)
            self.live_meta += len(blob)
            encoded.append(blob)
        self.blobs.extend(encoded)
        garbage = self.blobs.used - self.live_meta
        if garbage > max(1 << 20, self.live_meta):
            self.compact_meta()

    def drop_meta(self, labels: Sequence[int]) -> None:
        self.set_meta(labels, [None] * len(labels))

    def compact_meta(self) -> None:
        """Rewrite the metadata buffer with only the blobs some label refers to (writer)."""
        n = len(self.strings)
        ref = self.ref[:n]
        has = np.flatnonzero(ref >= 0)
        blobs = Strings()
        blobs.extend([self.blobs.get(int(b)) for b in ref[has].tolist()])
        new_ref = np.full(self.ref.size, -1, dtype=np.int32)
        new_ref[has] = np.arange(has.size, dtype=np.int32)
        self.blobs, self.ref = blobs, new_ref

    def meta_json(self, label: int) -> bytes | None:
        blob = int(self.ref[label])
        return None if blob < 0 else self.blobs.get(blob)

    def meta(self, label: int) -> dict[str, Any] | None:
        blob = self.meta_json(label)
        return None if blob is None else json.loads(blob)

    # ---- snapshots ---------------------------------------------------------------------
    def arrow(self) -> tuple[pa.Array, pa.Array]:
        """(ids, metadata JSON or null) per label, as Arrow arrays."""
        n = len(self.strings)
        ref = self.ref[:n]
        if not (ref >= 0).any():
            return self.strings.arrow(), pa.nulls(n, pa.large_string())
        taken = self.blobs.arrow().take(pa.array(np.where(ref >= 0, ref, 0).astype(np.int64)))
        meta = pc.if_else(pa.array(ref >= 0), taken, pa.nulls(n, pa.large_string()))
        return self.strings.arrow(), meta

    @classmethod
    def of(cls, ids: pa.Array | pa.ChunkedArray, metadata: pa.Array | pa.ChunkedArray) -> Items:
        """From a snapshot's ``id`` and ``metadata`` columns (JSON text or null)."""
        items = cls()
        items.strings = Strings.of(ids)
        n = len(items.strings)
        meta = metadata.combine_chunks() if isinstance(metadata, pa.ChunkedArray) else metadata
        valid = meta.is_valid().to_numpy(zero_copy_only=False)
        items.blobs = Strings.of(meta.filter(pa.array(valid)))
        items.ref = np.full(n, -1, dtype=np.int32)
        items.ref[valid] = np.arange(int(valid.sum()), dtype=np.int32)
        items.live_meta = items.blobs.used
        items.keys = np.fromiter(map(_hash, items.ids()), dtype=np.int64, count=n)
        items.vals = np.arange(n, dtype=np.int64)
        order = np.argsort(items.keys, kind="stable")
        items.keys, items.vals = items.keys[order], items.vals[order]
        clash = np.flatnonzero(items.keys[1:] == items.keys[:-1]) + 1
        if clash.size:  # ids sharing a hash: all but the first go to overflow
            for label in items.vals[clash].tolist():
                items.overflow[items.id(label)] = label
            keep = np.ones(n, dtype=bool)
            keep[clash] = False
            items.keys, items.vals = items.keys[keep], items.vals[keep]
        return items

    def nbytes(self) -> int:
        """Bytes of the buffers (the pending and overflow dicts at ~100 B an entry)."""
        arrays = self.strings.nbytes() + self.blobs.nbytes() + self.ref.nbytes
        return arrays + self.keys.nbytes + self.vals.nbytes + 100 * len(self.pending)
