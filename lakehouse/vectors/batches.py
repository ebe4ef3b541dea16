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
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from nats.js import JetStreamContext
from nats.js.errors import APIError

from lakehouse.platform import backoff, lazy
from lakehouse.platform.errors import BadRequest
from schemas import subjects as S
from schemas.vectors import IndexSpec

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
else:
    pa = lazy.module("pyarrow")
    pc = lazy.module("pyarrow.compute")

MsgId = Callable[[int, bytes], str]
"""Gives a batch its Nats-Msg-Id from (partition, encoded batch)."""
MAX_EXPANSION = 16 << 20
"""Bytes of vectors a batch may decode to beyond 8x its own size (encode's need 1x)."""
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # an IPC stream's end-of-stream marker


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
    """Parse a vector batch; raises BadRequest naming what is wrong, and nothing else: the
    vector worker dead-letters a bad batch and goes on, where any other exception would stall
    its partition on that batch.

    Accepted beyond what :func:`encode` writes: ``id``/``op``/``metadata`` as large strings,
    vectors as (large) lists and of any float or integer type. Refused: a stream cut short or
    with bytes after its end, compressed or dictionary batches, duplicate columns, null ids,
    ops other than upsert/delete, an upsert without a vector or with a null, NaN or infinite
    component, metadata that is not a JSON object, and more rows than the bytes could encode
    (``n * dim`` floats are allocated from the row count)."""
    table = _read(data)
    names, n = table.column_names, table.num_rows
    if len(set(names)) < len(names):
        raise BadRequest(f"vector batch has duplicate column names: {names}")
    missing = {"id", "vector"} - set(names)
    if missing:
        raise BadRequest(f"vector batch lacks column(s) {sorted(missing)}")
    for name in ("id", "op", "metadata"):
        type_ = table.schema.field(name).type if name in names else pa.string()
        if not (pa.types.is_string(type_) or pa.types.is_large_string(type_)):
            raise BadRequest(f"vector batch column {name!r} is {type_}, not string")
    col = table.column("vector").combine_chunks()
    type_ = col.type
    if not (
        (pa.types.is_list(type_) or pa.types.is_large_list(type_) or _fixed(type_))
        and (pa.types.is_floating(type_.value_type) or pa.types.is_integer(type_.value_type))
    ):
        raise BadRequest(f"vector batch column 'vector' is {type_}, not a list of floats")
    width = type_.list_size if _fixed(type_) else None
    if width is not None and width != dim:
        raise BadRequest(f"vector dimension {width} does not match the index dimension {dim}")
    if n * dim * 4 > 8 * len(data) + MAX_EXPANSION:
        raise BadRequest(f"vector batch of {len(data)} bytes declares {n} rows of dimension {dim}")
    ids = table.column("id").to_pylist()
    if None in ids:
        raise BadRequest(f"vector batch row {ids.index(None) + 1} has a null id")
    ops = table.column("op").to_pylist() if "op" in names else ["upsert"] * n
    if not set(ops) <= {"upsert", "delete"}:
        i, op = next((i, op) for i, op in enumerate(ops) if op not in ("upsert", "delete"))
        raise BadRequest(f"vector {ids[i]!r} has op {op!r}; expected 'upsert' or 'delete'")
    vectors = _vectors(col, ids, np.array([op == "upsert" for op in ops], dtype=bool), dim)
    texts = table.column("metadata").to_pylist() if "metadata" in names else [None] * n
    return Batch(ids, ops, vectors, _metadata(texts, ids))


def _fixed(type_: Any) -> bool:
    return bool(pa.types.is_fixed_size_list(type_))


def _read(data: bytes) -> Any:
    """The table of one whole IPC stream, fully validated (offsets, UTF-8) before any use."""
    if bytes(data[-len(_EOS) :]) != _EOS:  # cut at a message boundary, it would still parse
        raise BadRequest("not an Arrow IPC vector batch: it does not end with end-of-stream")
    try:
        for message in pa.ipc.MessageReader.open_stream(pa.BufferReader(data)):
            if message.type == "dictionary":
                raise BadRequest("vector batches have no dictionary-encoded columns")
            if message.type == "record batch" and _compressed(message.metadata.to_pybytes()):
                raise BadRequest(  # Arrow would first allocate the size the buffer declares
                    "compressed vector batches are refused (send them uncompressed)"
                )
        source = pa.BufferReader(data)
        table = pa.ipc.open_stream(source).read_all()
        table.validate(full=True)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        # OSError: some of Arrow's IO errors; UnicodeDecodeError: a column name not UTF-8
        raise BadRequest(f"not an Arrow IPC vector batch: {exc}") from None
    if source.tell() != len(data):
        raise BadRequest(f"vector batch has {len(data) - source.tell()} bytes after its end")
    return table


def _compressed(meta: bytes) -> bool:
    """Whether a record batch message's flatbuffer (Arrow's format/Message.fbs, already
    verified by Arrow) sets ``Message.header`` (field 2) -> ``RecordBatch.compression``
    (field 3)."""

    def field(table: int, index: int) -> int:  # where the field's value is; 0: absent
        vtable = table - struct.unpack_from("<i", meta, table)[0]
        slot = 4 + 2 * index
        size = struct.unpack_from("<H", meta, vtable)[0]
        at = struct.unpack_from("<H", meta, vtable + slot)[0] if slot < size else 0
        return table + at if at else 0

    try:
        header = field(struct.unpack_from("<I", meta)[0], 2)
        return bool(header) and field(header + struct.unpack_from("<I", meta, header)[0], 3) > 0
    except struct.error:
        raise BadRequest("not an Arrow IPC vector batch: bad message metadata") from None


def _vectors(col: Any, ids: list[str], upsert: np.ndarray, dim: int) -> np.ndarray:
    """(n, dim) float32: upserts' vectors, zeros for deletes."""
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    if (upsert & ~valid).any():
        raise BadRequest(f"upsert of {ids[int(np.argmax(upsert & ~valid))]!r} has no vector")
    if not _fixed(col.type):
        lengths = pc.list_value_length(col).fill_null(dim).to_numpy(zero_copy_only=False)
        if (lengths != dim).any():
            i = int(np.argmax(lengths != dim))
            raise BadRequest(f"vector {ids[i]!r} has dimension {lengths[i]}; the index has {dim}")
    flat = col.flatten()  # the values of the non-null vectors, in order
    rows = np.flatnonzero(valid)
    if flat.null_count:
        i = rows[int(np.argmax(flat.is_null().to_numpy(zero_copy_only=False))) // dim]
        raise BadRequest(f"vector {ids[i]!r} has a null component")
    with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, refused below
        values = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if len(rows) == len(ids) and upsert.all():  # the usual batch: the values as they came
        vectors = values.reshape(len(ids), dim)  # (read-only when it is Arrow's own buffer)
    else:
        vectors = np.zeros((len(ids), dim), dtype=np.float32)
        vectors[rows] = values.reshape(-1, dim)
        vectors[~upsert] = 0  # a delete's vector means nothing
    # min/max propagate NaN and show +-inf without an n x dim temporary; the row is looked
    # for only when one is there.
    if vectors.size and not (np.isfinite(vectors.min()) and np.isfinite(vectors.max())):
        finite = np.isfinite(vectors).all(axis=1)
        raise BadRequest(f"vector {ids[int(np.argmin(finite))]!r} has a NaN or infinite value")
    return vectors


def _metadata(texts: list[str | None], ids: list[str]) -> list[dict[str, Any] | None]:
    metas: list[dict[str, Any] | None] = []
    for item_id, text in zip(ids, texts, strict=True):
        try:
            value = None if text is None else json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            raise BadRequest(f"metadata of {item_id!r} is not valid JSON") from None
        if text is not None and not isinstance(value, dict):
            raise BadRequest(f"metadata of {item_id!r} is not a JSON object")
        metas.append(value)
    return metas


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
