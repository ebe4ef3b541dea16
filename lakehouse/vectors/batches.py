"""Vector batches: stable partitioning, the binary batch format (one Arrow IPC stream per
batch, see ``schemas.vectors``), and publishing batches onto their partitions' subjects.

Everything that writes vectors (the gateway, the embed worker, the benchmark, upstream-style
tests) groups, encodes and publishes through :func:`publish`; the vector worker and replay
read with :func:`decode`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from nats.js import JetStreamContext
from nats.js.errors import APIError

from lakehouse.platform import backoff
from lakehouse.platform.errors import BadRequest
from schemas import subjects as S
from schemas.vectors import IndexSpec

MsgId = Callable[[int, bytes], str]
"""Gives a batch its Nats-Msg-Id from (partition, encoded batch)."""


def partition_of(item_id: str, partitions: int) -> int:
    """Stable across processes and machines (unlike Python's hash())."""
    digest = hashlib.blake2b(item_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


@dataclass
class Batch:
    ids: list[str]
    ops: list[str]  # "upsert" | "delete"
    vectors: np.ndarray  # (n, dim) float32; rows of deletes are zeros
    metadata: list[dict[str, Any] | None]


def encode(
    ids: list[str],
    vectors: np.ndarray | None,
    metadata: list[dict[str, Any] | None] | None = None,
    *,
    dim: int,
    op: str = "upsert",
) -> bytes:
    """An Arrow IPC stream of one record batch (see schemas.vectors)."""
    n = len(ids)
    if op == "upsert":
        assert vectors is not None
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        vec = pa.FixedSizeListArray.from_arrays(flat, dim)
    else:
        vec = pa.nulls(n, type=pa.list_(pa.float32(), dim))
    meta = [None if m is None else json.dumps(m) for m in (metadata or [None] * n)]
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "op": pa.array([op] * n, pa.string()),
            "vector": vec,
            "metadata": pa.array(meta, pa.string()),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode(data: bytes, dim: int) -> Batch:
    """Parse a vector batch; raises BadRequest naming what is wrong."""
    try:
        table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadRequest(f"not an Arrow IPC vector batch: {exc}") from None
    missing = {"id", "vector"} - set(table.column_names)
    if missing:
        raise BadRequest(f"vector batch lacks column(s) {sorted(missing)}")
    n = table.num_rows
    ids = table.column("id").to_pylist()
    ops = table.column("op").to_pylist() if "op" in table.column_names else ["upsert"] * n
    col = table.column("vector").combine_chunks()
    width = getattr(col.type, "list_size", None)
    if width is not None and width != dim:
        raise BadRequest(f"vector dimension {width} does not match the index dimension {dim}")
    vectors = np.zeros((n, dim), dtype=np.float32)
    for i, v in enumerate(col.to_pylist() if width is None else []):
        if v is not None:
            if len(v) != dim:
                raise BadRequest(f"vector {ids[i]!r} has dimension {len(v)}; the index has {dim}")
            vectors[i] = v
    if width is not None:
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        vectors[valid] = flat.reshape(-1, dim)
    metas: list[dict[str, Any] | None] = (
        [None if m is None else json.loads(m) for m in table.column("metadata").to_pylist()]
        if "metadata" in table.column_names
        else [None] * n
    )
    return Batch(ids, ops, vectors, metas)


def batch_msg_id(index: str, partition: int, data: bytes) -> str:
    """Deterministic Nats-Msg-Id: a republished identical batch is stored once."""
    return f"vec-{index}-{partition}-{hashlib.sha256(data).hexdigest()[:32]}"


def by_partition(ids: Sequence[str], partitions: int) -> dict[int, list[int]]:
    """Row numbers of ``ids`` grouped by the partition owning each id, in partition order."""
    groups: dict[int, list[int]] = {}
    for row, item_id in enumerate(ids):
        groups.setdefault(partition_of(item_id, partitions), []).append(row)
    return dict(sorted(groups.items()))


def batches(
    ids: Sequence[str],
    vectors: np.ndarray | None,
    metadata: Sequence[dict[str, Any] | None] | None = None,
    *,
    dim: int,
    partitions: int,
    op: str = "upsert",
    max_rows: int = 0,
) -> Iterator[tuple[int, bytes]]:
    """``(partition, encoded batch)`` for every partition that owns some of ``ids``; with
    ``max_rows`` a partition's rows are split into batches of at most that many. Lazy: a
    batch is encoded when the publisher is ready for it."""
    for part, rows in by_partition(ids, partitions).items():
        step = max_rows or len(rows)
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            yield (
                part,
                encode(
                    [ids[r] for r in chunk],
                    None if vectors is None else vectors[chunk],
                    None if metadata is None else [metadata[r] for r in chunk],
                    dim=dim,
                    op=op,
                ),
            )


async def publish(
    js: JetStreamContext,
    index: str,
    items: Iterable[tuple[int, bytes]],
    *,
    msg_id: MsgId | None = None,
    window: int = 16,
    timeout: float = 30.0,
) -> int:
    """Publish encoded batches on ``lakehouse.vectors.<index>.<partition>``, at most
    ``window`` awaiting their ack, each with a deterministic Nats-Msg-Id (content-derived by
    default, so a re-published identical batch is stored once). A publish refused because the
    stream is momentarily full (429) is retried with backoff. Returns the batches stored."""
    slots = asyncio.Semaphore(window)
    name_of = msg_id or (lambda part, data: batch_msg_id(index, part, data))

    async def send(part: int, data: bytes) -> None:
        try:
            for attempt in range(20):
                try:
                    await js.publish(
                        S.vectors(index, part),
                        data,
                        timeout=timeout,
                        headers={"Nats-Msg-Id": name_of(part, data)},
                    )
                    return
                except APIError as exc:
                    if exc.code != 429 or attempt == 19:
                        raise
                    await asyncio.sleep(backoff.delay(attempt, 0.05, 1.0))
        finally:
            slots.release()

    tasks = []
    for part, data in items:
        await slots.acquire()
        tasks.append(asyncio.create_task(send(part, data)))
    await asyncio.gather(*tasks)
    return len(tasks)


async def publish_deletes(js: JetStreamContext, spec: IndexSpec, ids: Sequence[str]) -> int:
    """Delete ``ids`` from the index (one delete batch per partition owning some)."""
    if not ids:
        return 0
    encoded = batches(ids, None, dim=spec.dim, partitions=spec.partitions, op="delete")
    return await publish(js, spec.name, encoded)
