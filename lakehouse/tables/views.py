"""The SQL view of a dataset revision, shared by the query worker, the ingest worker's upsert,
compaction, ``lakehouse verify`` and ``lakehouse replay``.

A manifest's rows are its data objects' rows, less those whose key is in a delete set of a
higher revision (an upsert replaces or removes rows without rewriting old objects). Objects
written under an older schema (evolution) are read by name and cast to the current columns:
a column they lack reads as null, a dropped column is not selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lakehouse.platform.storage import Storage
from schemas.catalog import Manifest, ObjectRef

DUCK_TYPES = {"int64": "BIGINT", "float64": "DOUBLE", "bool": "BOOLEAN", "string": "VARCHAR"}
FILE = "__lh_file"  # the column read_parquet adds with each row's file name


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _files(paths: Sequence[str]) -> str:
    return "[" + ", ".join(literal(p) for p in paths) + "]"


def _revision_of(column: str, objects: Sequence[ObjectRef], paths: Sequence[str]) -> str:
    """SQL mapping a row's file name to the revision that added the file."""
    whens = " ".join(
        f"WHEN {literal(p)} THEN {o.revision}" for o, p in zip(objects, paths, strict=True)
    )
    return f"CASE {column} {whens} END"


def uniform(m: Manifest) -> bool:
    """True when every object was written with the manifest's own columns."""
    return all(o.fingerprint in (None, m.schema_fingerprint) for o in m.objects)


def select_sql(m: Manifest, paths: Sequence[str], delete_paths: Sequence[str] = ()) -> str:
    """The SELECT giving ``m``'s rows from its objects at ``paths`` and delete sets at
    ``delete_paths`` (both in the manifest's order)."""
    if not m.objects:
        cols = ", ".join(f"NULL::{DUCK_TYPES[c.type]} AS {ident(c.name)}" for c in m.columns)
        return f"SELECT {cols} WHERE false"
    same = uniform(m)
    if same and not m.deletes:
        return f"SELECT * FROM read_parquet({_files(paths)})"
    if same:
        projection = f"t.* EXCLUDE ({FILE})"
    else:
        projection = ", ".join(
            f"CAST(t.{ident(c.name)} AS {DUCK_TYPES[c.type]}) AS {ident(c.name)}" for c in m.columns
        )
    source = f"read_parquet({_files(paths)}, union_by_name = true, filename = {literal(FILE)}) t"
    if not m.deletes or m.key is None:
        return f"SELECT {projection} FROM {source}"
    deleted = (
        f"SELECT key AS __lh_key, max({_revision_of(FILE, m.deletes, delete_paths)}) AS __lh_rev "
        f"FROM read_parquet({_files(delete_paths)}, filename = {literal(FILE)}) GROUP BY key"
    )
    return (
        f"SELECT {projection} FROM {source} "
        f"LEFT JOIN ({deleted}) d ON d.__lh_key = CAST(t.{ident(m.key)} AS VARCHAR) "
        f"WHERE d.__lh_rev IS NULL OR d.__lh_rev <= {_revision_of('t.' + FILE, m.objects, paths)}"
    )


def view_sql(
    m: Manifest,
    paths: Sequence[str],
    delete_paths: Sequence[str] = (),
    *,
    name: str | None = None,
) -> str:
    """``CREATE OR REPLACE VIEW`` for ``m`` (named ``name``, an SQL identifier, default the
    dataset's quoted name) over its objects at ``paths`` and delete sets at ``delete_paths``."""
    target = name or ident(m.name)
    return f"CREATE OR REPLACE VIEW {target} AS {select_sql(m, paths, delete_paths)}"


async def local_view_sql(
    storage: Storage, m: Manifest, cache: Path, *, name: str | None = None
) -> str:
    """:func:`view_sql` over local paths of ``m``'s objects and delete sets (in place on the
    file backend, copied once into ``cache`` from S3: objects are immutable)."""
    paths = [str(await storage.readable_path(o.key, cache)) for o in m.objects]
    deletes = [str(await storage.readable_path(o.key, cache)) for o in m.deletes]
    return view_sql(m, paths, deletes, name=name)
