"""What each item of an index was embedded from: a content hash of its text per id, kept with
the index in storage (``_vectors/<index>/texts/<tag>.parquet``, columns ``id`` and ``sha``; a
null ``sha`` records a deletion). Files are read in name order, the last word per id wins;
an ingest adds one file after it has published its embed requests, so a crash before that
re-publishes the same requests (stored once) rather than losing them.

Auto-embed compares each row's rendered text with this record and embeds only the rows whose
text the index does not already have: a re-export of unchanged rows costs nothing, and rows
changed by an ingest without auto-embed are caught up by the next one with it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse.platform.storage import Storage, keys

MERGE_AFTER = 8  # files; past this, a record is rewritten as one file


def sha(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def tag(revision: int, job_id: str) -> str:
    """A file name that sorts by the dataset revision the texts belong to."""
    return f"{revision:012d}-{job_id}"


async def recorded(storage: Storage, index: str, work: Path) -> dict[str, bytes | None] | None:
    """The last hash per id (None: deleted), or None when nothing was ever recorded."""
    listing = await storage.list(keys.embedded_texts(index))
    files = sorted(o.key for o in listing.objects)
    if not files:
        return None
    out: dict[str, bytes | None] = {}
    for i, key in enumerate(files):
        path = work / f"texts-{i}.parquet"
        await storage.get_file(key, path)
        table = await asyncio.to_thread(pq.read_table, path)
        out.update(zip(table["id"].to_pylist(), table["sha"].to_pylist(), strict=True))
    if len(files) > MERGE_AFTER:
        await _merge(storage, index, files, out, work)
    return out


async def record(
    storage: Storage,
    index: str,
    name: str,
    ids: Sequence[str],
    shas: Sequence[bytes | None],
    work: Path,
) -> None:
    """Add one file: ``ids`` now hold the texts hashed in ``shas`` (None: deleted)."""
    if not ids:
        return
    table = pa.table({"id": pa.array(ids, pa.string()), "sha": pa.array(shas, pa.binary(16))})
    path = work / f"{name}.parquet"
    await asyncio.to_thread(pq.write_table, table, path, compression="zstd")
    await storage.put_file(keys.embedded_texts(index, name), path)


async def _merge(
    storage: Storage,
    index: str,
    files: list[str],
    state: dict[str, bytes | None],
    work: Path,
) -> None:
    """Replace ``files`` by one file holding ``state`` (named after the last of them, so it
    sorts after them and before anything written since)."""
    last = files[-1].rsplit("/", 1)[-1].removesuffix(".parquet")
    live = {k: v for k, v in state.items() if v is not None}
    await record(storage, index, f"{last}-merged", list(live), list(live.values()), work)
    for key in files:
        await storage.delete(key)
