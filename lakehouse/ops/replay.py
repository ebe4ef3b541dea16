"""Replay: fold a range of a stream into state with the workers' own code, or re-publish it.

The folds rebuild what a worker holds from the log alone (the log is walked by
:mod:`lakehouse.platform.streams`):

- :class:`CatalogFold` — every dataset's current manifest, its revision history and its last
  revisions' manifests, the state the catalog worker serves and the query workers turn into
  views (each event checked against the state before it);
- :class:`VectorFold` — every index partition's live ids (and, with ``build=True``, the HNSW
  partitions themselves, applied by :meth:`lakehouse.vectors.partition.Partition.apply`
  exactly as a vector worker applies them).

:func:`to_dir` writes a rebuilt state into a directory; :func:`to_live` re-publishes a range
onto its original subjects. ``lakehouse replay`` and ``lakehouse verify`` are built on these.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from nats.aio.client import Client as NATS

from lakehouse.platform.errors import BadRequest
from lakehouse.platform.storage import Storage
from lakehouse.platform.streams import Record, bounds, read
from lakehouse.tables.views import local_view_sql
from lakehouse.vectors.batches import decode
from lakehouse.vectors.indexes import ids_digest, list_indexes
from lakehouse.vectors.partition import Partition
from schemas import subjects as S
from schemas.catalog import CatalogEvent, Manifest
from schemas.vectors import IndexSpec


@dataclass
class Summary:
    stream: str
    first_seq: int = 0
    last_seq: int = 0
    messages: int = 0
    bytes: int = 0
    subjects: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)

    def add(self, rec: Record) -> None:
        self.first_seq = self.first_seq or rec.seq
        self.last_seq = rec.seq
        self.messages += 1
        self.bytes += len(rec.data)
        self.subjects[rec.subject] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "messages": self.messages,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "rate": round(self.messages / self.seconds, 1) if self.seconds else None,
            "subjects": dict(sorted(self.subjects.items())),
            "skipped": self.skipped,
        }


# ---- folds ---------------------------------------------------------------------------
Progress = Callable[[Summary, int], None]
"""Called after each record with the summary so far and the range's last sequence."""


class CatalogFold:
    """The catalog rebuilt from its events: the current event of each dataset (tombstones
    included, so a replay of a later range can drop a dataset), each dataset's history, and the
    manifests of its last ``keep_revisions`` registered revisions (since its last delete: what
    time travel may still read).

    Each event is checked against the state before it; an inconsistency is recorded in
    ``errors`` (and the event applied all the same: it is what the catalog worker serves).
    An event whose previous state this range did not hold (a replay starting mid-stream) is
    checked on its own only."""

    def __init__(self, keep_revisions: int = 1) -> None:
        self.current: dict[str, CatalogEvent] = {}
        self.history: dict[str, list[int]] = {}
        self.kept: dict[str, dict[int, Manifest]] = {}
        self.keep_revisions = max(1, keep_revisions)
        self.errors: list[str] = []

    def apply(self, rec: Record) -> None:
        try:
            event = CatalogEvent.model_validate_json(rec.data)
        except ValueError as exc:
            self.errors.append(f"seq {rec.seq}: not a catalog event ({exc.__class__.__name__})")
            return
        self.errors += [
            f"seq {rec.seq}: dataset {event.name} revision {event.revision}: {problem}"
            for problem in consistency(self.current.get(event.name), event)
        ]
        self.current[event.name] = event
        self.history.setdefault(event.name, []).append(event.revision)
        if event.type != "registered" or event.manifest is None:
            self.kept.pop(event.name, None)  # a deleted dataset's revisions are gone with it
            return
        kept = self.kept.setdefault(event.name, {})
        kept[event.manifest.revision] = event.manifest
        for old in sorted(kept)[: -self.keep_revisions]:
            del kept[old]

    def manifests(self) -> dict[str, Manifest]:
        return {
            n: e.manifest
            for n, e in sorted(self.current.items())
            if e.type == "registered" and e.manifest is not None
        }

    def revisions(self, name: str) -> dict[int, Manifest]:
        """The dataset's last ``keep_revisions`` registered manifests by revision, oldest
        first (empty once it is deleted)."""
        return dict(sorted(self.kept.get(name, {}).items()))


def consistency(prev: CatalogEvent | None, event: CatalogEvent) -> list[str]:
    """What is wrong with ``event`` following ``prev`` (None: not seen in this range; then
    only an event claiming revision 1 has a known predecessor, none)."""
    problems: list[str] = []
    m = event.manifest
    if event.type == "registered":
        if m is None:
            return ["registered without a manifest"]
        if m.revision != event.revision:
            problems.append(f"manifest says revision {m.revision}")
        if m.name != event.name:
            problems.append(f"manifest names dataset {m.name!r}")
    if prev is None and event.revision != 1:
        return problems  # the state before it is outside the range: nothing to compare
    last = prev.revision if prev is not None else 0
    if event.revision != last + 1:
        problems.append(f"follows revision {last} (expected {last + 1})")
    if m is None or event.change is None:
        return problems  # a tombstone, or an event from before change summaries
    before = prev.manifest if prev is not None and prev.type == "registered" else None
    rows_before = before.row_count if before is not None else 0
    change = event.change
    kept_objects = {o.key for o in before.objects} if before is not None else set()
    kept_deletes = {d.key for d in before.deletes} if before is not None else set()
    objects, deletes = {o.key for o in m.objects}, {d.key for d in m.deletes}
    if change.mode == "upsert":
        want = rows_before + change.inserted - change.deleted
        if m.row_count != want:
            problems.append(
                f"upsert: row count {m.row_count} != {rows_before} before + {change.inserted} "
                f"inserted - {change.deleted} deleted = {want}"
            )
        if not kept_objects <= objects:
            problems.append(f"upsert dropped objects {sorted(kept_objects - objects)}")
        if not kept_deletes <= deletes:
            problems.append(f"upsert dropped delete sets {sorted(kept_deletes - deletes)}")
    elif change.mode == "compact":
        if before is not None and m.row_count != rows_before:
            problems.append(f"compaction changed the row count {rows_before} -> {m.row_count}")
        if m.deletes:
            problems.append(f"compaction left {len(m.deletes)} delete set(s)")
    elif change.mode == "append":
        if not kept_objects <= objects:
            problems.append(f"append dropped objects {sorted(kept_objects - objects)}")
        if m.row_count != rows_before + change.inserted:
            problems.append(
                f"append: row count {m.row_count} != {rows_before} before + "
                f"{change.inserted} inserted"
            )
    return problems


class VectorFold:
    """Index partitions rebuilt from ``LAKEHOUSE_VECTORS``: live ids per partition, and with
    ``build=True`` the HNSW partitions (single-threaded by default: deterministic graphs)."""

    def __init__(self, specs: list[IndexSpec], *, build: bool = False, threads: int = 1) -> None:
        self.specs = {s.name: s for s in specs}
        self.build = build
        self.ids: dict[tuple[str, int], set[str]] = {}
        self.parts: dict[tuple[str, int], Partition] = {}
        self.threads = threads
        self.last_seq: dict[tuple[str, int], int] = {}
        self.errors: list[str] = []

    def apply(self, rec: Record) -> None:
        _, index, number = rec.subject.rsplit(".", 2)
        spec = self.specs.get(index)
        if spec is None:
            return  # batches of an index that no longer exists
        key = (index, int(number))
        self.last_seq[key] = rec.seq
        try:
            batch = decode(rec.data, spec.dim)
        except BadRequest as exc:
            self.errors.append(f"seq {rec.seq} ({rec.subject}): {exc.detail}")
            return  # the vector worker dead-letters and skips it too
        live = self.ids.setdefault(key, set())
        for item_id, op in zip(batch.ids, batch.ops, strict=True):
            if op == "delete":
                live.discard(item_id)
            else:
                live.add(item_id)
        if self.build:
            part = self.parts.get(key)
            if part is None:
                part = self.parts[key] = Partition(spec, key[1], threads=self.threads)
            part.apply(batch, rec.seq)

    def partitions(self, index: str) -> dict[int, dict[str, Any]]:
        spec = self.specs[index]
        out = {}
        for p in range(spec.partitions):
            ids = list(self.ids.get((index, p), ()))
            out[p] = {"count": len(ids), "digest": ids_digest(ids)}
        return out


async def fold(
    nc: NATS,
    stream: str,
    apply: Callable[[Record], Awaitable[None] | None],
    *,
    start: int = 1,
    end: int | None = None,
    subject: str | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Read ``[start, end]`` of ``stream`` and hand every record to ``apply`` (a plain or an
    async function)."""
    if end is None:
        start, end = await bounds(nc, stream, from_seq=start)
    summary = Summary(stream)
    began = time.monotonic()
    async for rec in read(nc, stream, start, end, subject):
        done = apply(rec)
        if done is not None:
            await done
        summary.add(rec)
        if progress is not None:
            progress(summary, end)
    summary.seconds = time.monotonic() - began
    return summary


# ---- replay targets: an isolated directory, or the live system ------------------
LIVE_REFUSED = {
    S.STREAM_CATALOG: "re-appending old events would make old revisions current; rebuild "
    "with --into DIR, or run `lakehouse catalog restore` after a store loss",
    S.STREAM_INDEXES: "re-appending old definitions would resurrect deleted indexes",
    S.STREAM_JOBS: "job updates have no handler",
    S.STREAM_DLQ: "use `lakehouse dlq retry`, which re-publishes to the original subject",
}


async def to_live(
    nc: NATS, stream: str, start: int, end: int, subject: str | None, progress: Progress
) -> Summary:
    """Re-publish the range onto its original subjects, so the live handlers take it again.
    Vector batches keep their content-derived Nats-Msg-Id (an identical batch re-published
    within the duplicate window is stored once; applying one twice is an idempotent upsert)."""
    if stream in LIVE_REFUSED:
        raise BadRequest(
            f"refusing to replay {stream} into the live system: {LIVE_REFUSED[stream]}"
        )
    js = nc.jetstream()

    async def publish(rec: Record) -> None:
        headers = {k: v for k, v in rec.headers.items() if not k.startswith("Nats-Expected")}
        if stream != S.STREAM_VECTORS:
            headers.pop("Nats-Msg-Id", None)
        headers["Lakehouse-Replayed-From"] = f"{stream}:{rec.seq}"
        await js.publish(rec.subject, rec.data, headers=headers)

    return await fold(nc, stream, publish, start=start, end=end, subject=subject, progress=progress)


async def to_dir(
    nc: NATS,
    storage: Storage,
    stream: str,
    start: int,
    end: int,
    subject: str | None,
    out: Path,
    progress: Progress,
    threads: int = 1,
) -> tuple[Summary, dict[str, Any]]:
    """Fold the range with the workers' own code into ``out`` (a fresh directory)."""
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the replay
    if stream == S.STREAM_CATALOG:
        cat = CatalogFold()
        summary = await fold(
            nc, stream, cat.apply, start=start, end=end, subject=subject, progress=progress
        )
        return summary, await write_catalog(cat, storage, out)
    if stream == S.STREAM_VECTORS:
        vec = VectorFold(await list_indexes(nc.jetstream()), build=True, threads=threads)
        summary = await fold(
            nc, stream, vec.apply, start=start, end=end, subject=subject, progress=progress
        )
        return summary, write_vectors(vec, out)
    if stream == S.STREAM_INDEXES:
        specs: dict[str, IndexSpec] = {}

        def apply(rec: Record) -> None:
            spec = IndexSpec.model_validate_json(rec.data)
            specs[spec.name] = spec

        summary = await fold(
            nc, stream, apply, start=start, end=end, subject=subject, progress=progress
        )
        state = {n: s.model_dump(mode="json") for n, s in sorted(specs.items()) if not s.deleted}
        (out / "indexes.json").write_text(json.dumps(state, indent=2))
        return summary, {"indexes": sorted(state)}
    # Requests (ingest, embed), jobs and dead letters act on storage and other streams: their
    # isolated replay is counted here, and re-driven for real with --into live.
    summary = await fold(
        nc, stream, lambda rec: None, start=start, end=end, subject=subject, progress=progress
    )
    summary.skipped.append(f"{stream} has no isolated state; counted only (use --into live)")
    return summary, {}


async def write_catalog(cat: CatalogFold, storage: Storage, out: Path) -> dict[str, Any]:
    """``catalog.json`` (manifests and revision histories) and ``views.duckdb``: the views a
    query worker would create, over the same objects (downloaded when not local)."""
    manifests = cat.manifests()
    (out / "catalog.json").write_text(
        json.dumps(
            {
                "datasets": {n: m.model_dump(mode="json") for n, m in manifests.items()},
                "history": cat.history,
                "errors": cat.errors,
            },
            indent=2,
        )
    )
    db_path = out / "views.duckdb"
    db_path.unlink(missing_ok=True)
    with duckdb.connect(str(db_path)) as db:
        for m in manifests.values():
            db.execute(await local_view_sql(storage, m, out / "objects"))
    return {"datasets": sorted(manifests), "views": str(db_path)}


def write_vectors(vec: VectorFold, out: Path) -> dict[str, Any]:
    """Each rebuilt partition saved as a snapshot (``index.hnsw`` + ``ids.parquet``, loadable
    by a vector worker) under ``vectors/<index>/<p>/``, and ``vectors.json`` with id counts
    and digests per partition."""
    summary = {}
    for (index, number), part in sorted(vec.parts.items()):
        target = out / "vectors" / index / str(number)
        target.mkdir(parents=True, exist_ok=True)
        part.save(target)
    for index in sorted(vec.specs):
        summary[index] = {str(p): r for p, r in vec.partitions(index).items()}
    (out / "vectors.json").write_text(json.dumps(summary, indent=2))
    return {"indexes": summary, "errors": vec.errors}
