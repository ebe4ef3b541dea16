"""``lakehouse replay``: a stream range into an isolated state directory, or into the live
system through its subjects. See :mod:`lakehouse.replay` for reading and folding."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from nats.aio.client import Client as NATS

from lakehouse.errors import BadRequest
from lakehouse.replay import CatalogFold, Record, Summary, VectorFold, fold
from lakehouse.storage import Storage
from lakehouse.vectors import list_indexes
from lakehouse.views import view_sql
from schemas import subjects as S
from schemas.vectors import IndexSpec

LIVE_REFUSED = {
    S.STREAM_CATALOG: "re-appending old events would make old revisions current; rebuild "
    "with --into DIR, or run `lakehouse catalog restore` after a store loss",
    S.STREAM_INDEXES: "re-appending old definitions would resurrect deleted indexes",
    S.STREAM_JOBS: "job updates have no handler",
    S.STREAM_DLQ: "use `lakehouse dlq retry`, which re-publishes to the original subject",
}

Progress = Callable[[Summary, int], None]


def progress_printer(start: int, end: int) -> Progress:
    """A one-line progress bar on stderr (a line every 5 s when stderr is not a terminal)."""
    last = [0.0]
    tty = sys.stderr.isatty()
    total = max(1, end - start + 1)

    def show(summary: Summary, end_seq: int) -> None:
        now = time.monotonic()
        if now - last[0] < (0.2 if tty else 5.0) and summary.last_seq < end_seq:
            return
        last[0] = now
        done = (summary.last_seq - start + 1) / total
        bar = "#" * int(done * 30)
        line = f"[{bar:<30}] seq {summary.last_seq}/{end_seq} · {summary.messages} messages"
        sys.stderr.write(("\r" + line) if tty else (line + "\n"))
        sys.stderr.flush()

    return show


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
            paths = [str(await storage.readable_path(o.key, out / "objects")) for o in m.objects]
            db.execute(view_sql(m, paths))
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
