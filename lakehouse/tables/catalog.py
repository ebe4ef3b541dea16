"""Reading and writing the catalog stream (``LAKEHOUSE_CATALOG``), the source of truth.

Each dataset's events live on ``lakehouse.catalog.events.<name>``; its current state is the
last event on that subject. Writers publish with ``Nats-Expected-Last-Subject-Sequence`` so
two concurrent changes of one dataset cannot both win.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from lakehouse.platform import streams
from lakehouse.platform.bus import StaleSequence, publish_expecting
from lakehouse.platform.errors import BadRequest
from lakehouse.platform.storage import Storage, keys
from schemas import subjects as S
from schemas.catalog import CatalogEvent, Manifest, ObjectRef


class SequenceConflict(Exception):
    """Another writer changed the dataset first; re-read and try again."""


@dataclass(frozen=True)
class Entry:
    event: CatalogEvent
    seq: int


async def last_event(js: JetStreamContext, name: str) -> Entry | None:
    try:
        msg = await js.get_last_msg(S.STREAM_CATALOG, S.catalog_events(name))
    except NotFoundError:
        return None
    return Entry(CatalogEvent.model_validate_json(msg.data or b"{}"), msg.seq or 0)


async def event_at(js: JetStreamContext, seq: int) -> CatalogEvent | None:
    """The catalog event stored at stream sequence ``seq`` (None when it is gone)."""
    try:
        msg = await js.get_msg(S.STREAM_CATALOG, seq)
    except NotFoundError:
        return None
    return CatalogEvent.model_validate_json(msg.data or b"{}")


async def dataset_names(js: JetStreamContext) -> list[str]:
    info = await js.stream_info(
        S.STREAM_CATALOG, subjects_filter=S.all_under(S.CATALOG_EVENTS_PREFIX)
    )
    prefix = S.CATALOG_EVENTS_PREFIX + "."
    return sorted(s[len(prefix) :] for s in (info.state.subjects or {}))


async def current(js: JetStreamContext) -> dict[str, Entry]:
    """The last event of every dataset (tombstones included), by name."""
    out: dict[str, Entry] = {}
    for name in await dataset_names(js):
        entry = await last_event(js, name)
        if entry is not None:
            out[name] = entry
    return out


async def history(nc: NATS, name: str) -> list[Entry]:
    """Every event of one dataset, oldest first."""
    start, end = await streams.bounds(nc, S.STREAM_CATALOG)
    return [
        Entry(CatalogEvent.model_validate_json(rec.data or b"{}"), rec.seq)
        async for rec in streams.read(nc, S.STREAM_CATALOG, start, end, S.catalog_events(name))
    ]


async def registered_by(
    nc: NATS, name: str, request_id: str
) -> tuple[Entry, Manifest | None] | None:
    """The event that request ``request_id`` registered on ``name``, and the manifest before
    it (None: the dataset was new); None when the request is not in the history."""
    previous: Manifest | None = None
    for entry in await history(nc, name):
        m = entry.event.manifest if entry.event.type == "registered" else None
        if m is not None and m.last_request == request_id:
            return entry, previous
        previous = m
    return None


async def revisions(nc: NATS, name: str) -> list[Manifest]:
    """The manifests of the dataset's current life (since its last delete), oldest first."""
    found: list[Manifest] = []
    for entry in await history(nc, name):
        if entry.event.type == "deleted":
            found = []
        elif entry.event.manifest is not None:
            found.append(entry.event.manifest)
    return found


async def readable(storage: Storage, m: Manifest) -> bool:
    """True while every object of the revision exists (gc has not collected it)."""
    for obj in m.stored:
        if not await storage.exists(obj.key):
            return False
    return True


async def at_revision(nc: NATS, storage: Storage, name: str, revision: int) -> Manifest:
    """Revision ``revision`` of ``name`` for time travel; BadRequest naming the revisions
    available when it never existed, belongs to a deleted incarnation, or was collected."""
    found = await revisions(nc, name)
    if not found:
        raise BadRequest(f"as_of: no dataset named {name!r}")
    wanted = next((m for m in found if m.revision == revision), None)
    if wanted is not None and await readable(storage, wanted):
        return wanted
    available = [m.revision for m in found if await readable(storage, m)]
    why = "has no revision" if wanted is None else "no longer has the objects of revision"
    raise BadRequest(
        f"as_of: dataset {name!r} {why} {revision}; revisions available: {available}",
        error="unknown revision",
    )


async def publish(js: JetStreamContext, event: CatalogEvent, expected_last_seq: int) -> int:
    """Append ``event`` if the dataset's last sequence is still ``expected_last_seq``."""
    try:
        ack = await publish_expecting(
            js,
            S.catalog_events(event.name),
            event.model_dump_json().encode(),
            expected_last_seq,
            headers={"Nats-Msg-Id": f"catalog-{event.name}-{event.revision}"},
        )
    except StaleSequence:
        raise SequenceConflict(event.name) from None
    if ack.duplicate:
        # The same revision was already written (by us, before a crash, or by a racing
        # replica with identical content): treat as a conflict so the caller re-reads.
        raise SequenceConflict(event.name)
    return ack.seq


# ---- data objects ---------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def store_object(
    storage: Storage, dataset: str, fingerprint: str | None, path: Path, rows: int
) -> ObjectRef:
    """Put a Parquet file under its content address: a data object written with the columns
    of ``fingerprint``, or (None) a delete set. A repeat of the same bytes writes the same key."""
    digest = (await asyncio.to_thread(sha256_file, path))[:32]
    size = (await asyncio.to_thread(path.stat)).st_size
    if fingerprint is None:
        key = keys.delete_set(dataset, digest)
    else:
        key = keys.data_object(dataset, fingerprint, digest)
    await storage.put_file(key, path)
    return ObjectRef(key=key, size=size, rows=rows, fingerprint=fingerprint)


# ---- manifests as Parquet under _catalog/ (for restore after a NATS store loss) ----------
MANIFEST_PREFIX = keys.MANIFESTS


def manifest_key(name: str) -> str:
    return keys.manifest(name)


def manifest_to_parquet(manifest: Manifest) -> bytes:
    table = pa.Table.from_pylist([manifest.model_dump(mode="python")])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def manifest_from_parquet(data: bytes) -> Manifest:
    [row] = pq.read_table(pa.BufferReader(data)).to_pylist()
    return Manifest.model_validate(row)


async def save_manifest(storage: Storage, manifest: Manifest) -> None:
    await storage.put_bytes(manifest_key(manifest.name), manifest_to_parquet(manifest))


async def load_manifests(storage: Storage) -> list[Manifest]:
    listing = await storage.list(MANIFEST_PREFIX)
    return [manifest_from_parquet(await storage.get_bytes(o.key)) for o in listing.objects]


async def restore(js: JetStreamContext, storage: Storage) -> list[str]:
    """Rebuild the catalog stream from the ``_catalog/`` mirror (after a NATS store loss).

    A dataset whose stream history is at or past the mirrored revision is left alone."""
    restored = []
    for manifest in await load_manifests(storage):
        entry = await last_event(js, manifest.name)
        if entry is not None and entry.event.revision >= manifest.revision:
            continue
        event = CatalogEvent(
            type="registered",
            name=manifest.name,
            revision=manifest.revision,
            at=manifest.updated_at,
            manifest=manifest,
        )
        await publish(js, event, entry.seq if entry else 0)
        restored.append(manifest.name)
    return restored
