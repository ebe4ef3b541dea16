"""Vector plumbing shared by the gateway and the embed and vector workers: the binary batch
format, stable partitioning, and index definitions on ``LAKEHOUSE_INDEXES``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from lakehouse.platform.errors import BadRequest, Conflict
from schemas import subjects as S
from schemas.vectors import IndexSpec


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


async def get_index(js: JetStreamContext, name: str) -> IndexSpec | None:
    try:
        msg = await js.get_last_msg(S.STREAM_INDEXES, S.index_def(name))
    except NotFoundError:
        return None
    spec = IndexSpec.model_validate_json(msg.data or b"{}")
    return None if spec.deleted else spec


async def list_indexes(js: JetStreamContext) -> list[IndexSpec]:
    info = await js.stream_info(S.STREAM_INDEXES, subjects_filter=S.all_under(S.INDEXES_PREFIX))
    out = []
    for subject in sorted(info.state.subjects or {}):
        spec = await get_index(js, subject[len(S.INDEXES_PREFIX) + 1 :])
        if spec is not None:
            out.append(spec)
    return out


WRONG_LAST_SEQUENCE = 10071


async def create_index(js: JetStreamContext, spec: IndexSpec) -> IndexSpec:
    """Publish a new index definition; Conflict when a live index has that name (also when a
    concurrent create wins the race)."""
    try:
        last = await js.get_last_msg(S.STREAM_INDEXES, S.index_def(spec.name))
    except NotFoundError:
        expected = 0
    else:
        if not IndexSpec.model_validate_json(last.data or b"{}").deleted:
            raise Conflict(f"index {spec.name!r} already exists")
        expected = last.seq or 0
    if spec.created_at is None:
        spec = spec.model_copy(update={"created_at": datetime.now(UTC)})
    try:
        await js.publish(
            S.index_def(spec.name),
            spec.model_dump_json().encode(),
            headers={"Nats-Expected-Last-Subject-Sequence": str(expected)},
        )
    except APIError as exc:
        if exc.err_code == WRONG_LAST_SEQUENCE:
            raise Conflict(f"index {spec.name!r} already exists") from None
        raise
    return spec


def ids_digest(ids: list[str]) -> str:
    """Order-free digest of an id set (what ``verify`` compares per partition)."""
    h = hashlib.sha256()
    for item in sorted(ids):
        h.update(item.encode())
        h.update(b"\n")
    return h.hexdigest()
