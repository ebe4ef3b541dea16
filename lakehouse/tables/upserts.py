"""An upsert's two steps that touch storage, around :func:`lakehouse.tables.merge.diff`:
compute the diff of an upload against a base revision (its objects read in place, or copied
once from S3 into the job's work dir), then store the data object and delete set it wrote,
content addressed. Registering them, and retrying when the dataset moved on, is the ingest
worker's."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from lakehouse.platform.storage import Storage
from lakehouse.tables import catalog, merge
from lakehouse.tables.evolve import fingerprint_of
from lakehouse.tables.views import local_view_sql
from schemas.catalog import ColumnSpec, Manifest, ObjectRef, SchemaRule


async def compute(
    storage: Storage,
    base: Manifest | None,
    upload: Path,
    columns: list[ColumnSpec],
    work: Path,
    *,
    key: str,
    rule: SchemaRule,
    delete_missing: bool,
    template: str | None,
    id_column: str | None,
    reembed_all: bool,
) -> tuple[merge.Diff, Path]:
    """The diff of ``upload`` against ``base`` (None: a new dataset) and the directory its
    files are in (``work/upsert``, emptied first)."""
    out = work / "upsert"
    await asyncio.to_thread(shutil.rmtree, out, True)
    out.mkdir()
    view = None
    if base is not None:
        view = await local_view_sql(storage, base, work / "objects", name=merge.CURRENT)
    diff = await asyncio.to_thread(
        merge.diff,
        view,
        base.columns if base else [],
        upload,
        columns,
        key=key,
        rule=rule,
        delete_missing=delete_missing,
        template=template,
        reembed_all=reembed_all,
        out=out,
        id_column=id_column,
    )
    return diff, out


async def store(
    storage: Storage, name: str, diff: merge.Diff, out: Path
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """The data object (none when nothing changed) and delete set (none when no key is
    replaced or removed) the diff wrote, stored under their content addresses."""
    written, deletes = [], []
    if (out / "data.parquet").exists():
        fingerprint = fingerprint_of(diff.columns)
        data = out / "data.parquet"
        written.append(await catalog.store_object(storage, name, fingerprint, data, diff.data_rows))
    if diff.delete_keys:
        gone = out / "deletes.parquet"
        deletes.append(await catalog.store_object(storage, name, None, gone, diff.delete_keys))
    return written, deletes
