"""Resolved filters on the wire: the ids a predicate matched, grouped by partition, and the
binary search request that carries them to the vector workers.

An id set is one Arrow IPC stream with one record batch (column ``id``) per partition, in
partition order, named by a digest of its bytes: a vector worker caches the labels of an id
set under that digest, which can never outlive a change of the set. A filtered binary query
is the query vector as little-endian float32 bytes followed by the id set's bytes; the
``Lakehouse-Query`` header carries ``k``, ``ef`` and ``filter`` (the digest).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lakehouse.platform import lazy
from lakehouse.platform.errors import BadRequest
from lakehouse.vectors.batches import partition_of
from schemas.vectors import QUERY_HEADER

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = lazy.module("pyarrow")


@dataclass(frozen=True)
class IdSet:
    digest: str
    count: int
    blob: bytes


def encode(ids: list[str], partitions: int) -> IdSet:
    """Group ``ids`` by partition into one Arrow IPC stream."""
    groups: list[list[str]] = [[] for _ in range(partitions)]
    for item in ids:
        groups[partition_of(item, partitions)].append(item)
    sink = pa.BufferOutputStream()
    schema = pa.schema([("id", pa.string())])
    with pa.ipc.new_stream(sink, schema) as writer:
        for group in groups:
            writer.write_batch(pa.record_batch([pa.array(group, pa.string())], schema=schema))
    blob = sink.getvalue().to_pybytes()
    return IdSet(hashlib.blake2b(blob, digest_size=16).hexdigest(), len(ids), blob)


def query(
    vector: list[float], k: int, ef: int | None, ids: IdSet | None
) -> tuple[bytes, dict[str, str]]:
    """The binary search request: body and headers."""
    body = np.asarray(vector, dtype="<f4").tobytes()
    params: dict[str, object] = {"k": k, "ef": ef}
    if ids is not None:
        body += ids.blob
        params["filter"] = ids.digest
    return body, {QUERY_HEADER: json.dumps(params)}


class Groups:
    """The per-partition ids of a filtered binary query, decoded only when first asked for
    (a worker whose label cache knows the digest never decodes them)."""

    def __init__(self, blob: memoryview) -> None:
        self.blob = blob
        self._batches: list[pa.RecordBatch] | None = None

    def ids(self, partition: int) -> list[str]:
        if self._batches is None:
            try:
                self._batches = list(pa.ipc.open_stream(pa.BufferReader(self.blob)))
            except pa.ArrowInvalid as exc:
                raise BadRequest(f"unreadable id set: {exc}") from None
        if partition >= len(self._batches):
            return []
        return self._batches[partition].column(0).to_pylist()
