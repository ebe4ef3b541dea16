"""Upsert and compaction on immutable objects, computed with DuckDB (blocking: run in a thread).

An upsert of an upload into a dataset revision writes at most two new objects and never
rewrites an old one:

* a **data object** with the upload's rows that are new or differ from the current row of
  their key (rows compared by a hash of every column, both sides cast to the final schema);
* a **delete set** (one string column ``key``) with the keys whose current rows are replaced
  or removed (``delete_missing``: keys absent from the upload).

:mod:`lakehouse.tables.views` reads a revision as its objects less the keys in delete sets of
higher revisions. Compaction rewrites that view into fresh objects with no delete sets.
For auto-embed the upsert also writes the rows whose rendered text changed (and the new ones),
so only those are embedded again.
"""

from __future__ import annotations

import shutil
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse.tables.evolve import evolve
from lakehouse.tables.rows import render
from lakehouse.tables.views import DUCK_TYPES, ident, literal
from schemas.catalog import ColumnSpec, SchemaChange, SchemaRule

ROW_GROUP_ROWS = 122_880  # as csv2parquet: DuckDB's unit of parallel scan
CURRENT = "__lh_current"  # the view of the current revision the caller creates
SHOWN = 5  # duplicate or empty keys named in an error


class KeyError400(ValueError):
    """The upload cannot be upserted by its key (missing column, empty or duplicate keys)."""


@dataclass
class Diff:
    columns: list[ColumnSpec]  # the dataset's columns after the upsert
    schema_change: SchemaChange | None
    inserted: int  # rows with a new key
    updated: int  # rows replacing the current row of their key
    deleted: int  # rows removed and not replaced
    data_rows: int  # rows in ``data`` (inserted + updated); 0: not written
    delete_keys: int  # keys in ``deletes``; 0: not written
    deleted_ids: list[str]  # keys removed (for the vector index)


def _copy(con: duckdb.DuckDBPyConnection, select: str, dst: Path) -> None:
    con.execute(
        f"COPY ({select}) TO {literal(str(dst))} "
        f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
    )


def _check_keys(con: duckdb.DuckDBPyConnection, upload: str, key: str) -> None:
    k = ident(key)
    empty = con.execute(
        f"SELECT file_row_number + 1 FROM {upload} WHERE {k} IS NULL ORDER BY 1 LIMIT {SHOWN}"
    ).fetchall()
    if empty:
        rows = [r for (r,) in empty]
        raise KeyError400(f"key column {key!r} is empty in data row(s) {rows}")
    dups = con.execute(
        f"SELECT CAST({k} AS VARCHAR), list(file_row_number + 1 ORDER BY file_row_number) "
        f"FROM {upload} GROUP BY 1 HAVING count(*) > 1 ORDER BY min(file_row_number) "
        f"LIMIT {SHOWN}"
    ).fetchall()
    if dups:
        named = "; ".join(f"{v!r} in data rows {rows[:SHOWN]}" for v, rows in dups)
        raise KeyError400(f"duplicate keys in column {key!r}: {named}")


def _projection(columns: Sequence[ColumnSpec], have: set[str]) -> str:
    """``columns`` from a source holding ``have``. A column the source lacks compares as the
    converter writes an empty cell: '' for strings (never null), else null."""
    return ", ".join(
        f"CAST({ident(c.name)} AS {DUCK_TYPES[c.type]}) AS {ident(c.name)}"
        if c.name in have
        else ("''" if c.type == "string" else f"NULL::{DUCK_TYPES[c.type]}")
        + f" AS {ident(c.name)}"
        for c in columns
    )


def diff(
    current_view: str | None,
    current_columns: Sequence[ColumnSpec],
    upload: Path,
    upload_columns: Sequence[ColumnSpec],
    *,
    key: str,
    rule: SchemaRule,
    delete_missing: bool,
    template: str | None,
    reembed_all: bool,
    out: Path,
    id_column: str | None = None,
) -> Diff:
    """Compare ``upload`` (a Parquet file) with the current revision (``current_view``: a
    ``CREATE VIEW __lh_current`` statement, None for a new dataset) by ``key`` and write
    ``out/data.parquet``, ``out/deletes.parquet`` and (with ``template``, whose items are
    identified by ``id_column``, default the key) ``out/revision.parquet`` and
    ``out/embed.parquet`` (see :func:`_embed_rows`).
    Raises KeyError400 (bad keys) or evolve.SchemaConflict."""
    names = [c.name for c in upload_columns]
    if key not in names:
        raise KeyError400(f"key column {key!r} is not a column of the upload; columns: {names}")
    if current_view is not None and key not in {c.name for c in current_columns}:
        raise KeyError400(f"key column {key!r} is not a column of the dataset")
    columns, change = (
        evolve(current_columns, upload_columns, rule)
        if current_view is not None
        else (list(upload_columns), None)
    )
    con = duckdb.connect()
    try:
        src = f"read_parquet({literal(str(upload))}, file_row_number = true)"
        _check_keys(con, src, key)
        k = ident(key)
        final = ", ".join(ident(c.name) for c in columns)
        # nv: the upload in the final columns (read from the file, never copied); n: its
        # keys and row hashes.
        con.execute(
            f"CREATE TEMP VIEW nv AS SELECT {_projection(columns, set(names))}, "
            f"CAST({k} AS VARCHAR) AS __k FROM {src}"
        )
        con.execute(f"CREATE TEMP TABLE n AS SELECT __k, hash({final}) AS __h FROM nv")
        if current_view is not None:
            con.execute(current_view)
            have = {c.name for c in current_columns}
            con.execute(
                f"CREATE TEMP VIEW cur AS SELECT {_projection(columns, have)}, "
                f"CAST({k} AS VARCHAR) AS __k FROM {CURRENT}"
            )
            con.execute(
                f"CREATE TEMP TABLE o AS SELECT __k, any_value(hash({final})) AS __h, "
                "count(*) AS __n FROM cur GROUP BY __k"
            )
        else:
            con.execute("CREATE TEMP TABLE o (__k VARCHAR, __h UBIGINT, __n BIGINT)")
        con.execute(
            "CREATE TEMP TABLE changed AS SELECT n.__k, o.__k IS NULL AS new, o.__n AS old "
            "FROM n LEFT JOIN o USING (__k) WHERE o.__k IS NULL OR o.__n > 1 OR o.__h <> n.__h"
        )
        gone = (
            "SELECT __k, __n FROM o ANTI JOIN n USING (__k)"
            if delete_missing
            else "SELECT __k, __n FROM o WHERE false"
        )
        con.execute(f"CREATE TEMP TABLE gone AS {gone}")
        inserted, updated, replaced = con.execute(
            "SELECT count(*) FILTER (new), count(*) FILTER (NOT new), "
            "coalesce(sum(old) FILTER (NOT new), 0) FROM changed"
        ).fetchone() or (0, 0, 0)
        removed, gone_keys = con.execute(
            "SELECT coalesce(sum(__n), 0), count(*) FROM gone"
        ).fetchone() or (0, 0)
        data_rows = int(inserted) + int(updated)
        if data_rows or change is not None:  # a schema change is recorded by an object
            _copy(
                con, f"SELECT {final} FROM nv SEMI JOIN changed USING (__k)", out / "data.parquet"
            )
        delete_keys = int(updated) + int(gone_keys)
        if delete_keys:
            _copy(
                con,
                "SELECT __k AS key FROM changed WHERE NOT new UNION ALL SELECT __k FROM gone",
                out / "deletes.parquet",
            )
        if template is not None:
            _embed_rows(con, template, id_column or key, reembed_all, current_view is not None, out)
        deleted_ids = [k for (k,) in con.execute("SELECT __k FROM gone ORDER BY 1").fetchall()]
    finally:
        con.close()
    return Diff(
        columns=columns,
        schema_change=change,
        inserted=int(inserted),
        updated=int(updated),
        deleted=int(replaced) - int(updated) + int(removed),
        data_rows=data_rows,
        delete_keys=delete_keys,
        deleted_ids=deleted_ids,
    )


def _embed_rows(
    con: duckdb.DuckDBPyConnection,
    template: str,
    id_column: str,
    everything: bool,
    current: bool,
    out: Path,
) -> None:
    """Write, as the id column and the template's columns in key order (deterministic embed
    batches): ``revision.parquet``, every row of the new revision, and ``embed.parquet``, the
    rows to embed judged by the diff alone: every row (``everything``), else the new rows and
    the changed rows whose rendered text differs from their current row's."""
    fields = sorted({f for _, f, _, _ in string.Formatter().parse(template) if f} | {id_column})
    cols = ", ".join(ident(f) for f in fields)
    revision = (
        f"SELECT {cols}, __k FROM cur WHERE __k NOT IN (SELECT __k FROM n) "
        f"AND __k NOT IN (SELECT __k FROM gone) UNION ALL SELECT {cols}, __k FROM nv"
        if current
        else f"SELECT {cols}, __k FROM nv"
    )
    _copy(con, f"SELECT {cols} FROM ({revision}) ORDER BY __k", out / "revision.parquet")
    if everything:
        shutil.copyfile(out / "revision.parquet", out / "embed.parquet")
        return
    texts_differ: list[str] = []
    if current:
        pairs: dict[str, list[str]] = {}
        for side in ("cur", "nv"):
            rows = con.sql(
                f"SELECT __k, {cols} FROM {side} SEMI JOIN "
                f"(SELECT __k FROM changed WHERE NOT new) c USING (__k)"
            ).to_arrow_table()
            for row in rows.to_pylist():
                pairs.setdefault(row.pop("__k"), []).append(render(template, row))
        texts_differ = [k for k, texts in pairs.items() if len(set(texts)) > 1]
    con.register("reembed", pa.table({"__k": pa.array(texts_differ, pa.string())}))
    _copy(
        con,
        f"SELECT {cols} FROM nv SEMI JOIN (SELECT __k FROM changed WHERE new "
        f"UNION ALL SELECT __k FROM reembed) c USING (__k) ORDER BY __k",
        out / "embed.parquet",
    )


def compact(current_view: str, dst: Path) -> int:
    """Write the current revision's rows (``current_view`` creates ``__lh_current``) into
    one Parquet file; returns its row count."""
    con = duckdb.connect()
    try:
        con.execute(current_view)
        _copy(con, f"SELECT * FROM {CURRENT}", dst)
    finally:
        con.close()
    return int(pq.read_metadata(dst).num_rows)
