"""Schema evolution: how an upload's columns may change a dataset's (the one place the rule
lives; the ingest worker applies it to shape an upsert, the catalog worker to accept it).

* Widening follows ADR-010's order: ``int64 -> float64 -> string`` and ``bool -> string``
  (any other pair meets at ``string``). Older rows keep their values, read as the wider type.
* ``strict``: the upload has the dataset's columns (any order) and no type wider than the
  dataset's (a narrower one is read as the dataset's: ``7`` in a ``float64`` column is 7.0).
* ``evolve``: also adds the upload's new columns (after the existing ones; null in older
  rows) and widens types. A column the upload lacks is a conflict.
* ``any``: evolve, and the columns the upload lacks are dropped (a rename is a drop + add).
"""

from __future__ import annotations

from collections.abc import Sequence

from lakehouse.tables.csv2parquet import fingerprint, widest
from schemas.catalog import ColumnSpec, SchemaChange, SchemaRule


class SchemaConflict(ValueError):
    """The upload's columns are not an allowed change of the dataset's (a 409)."""


def hints(current: Sequence[ColumnSpec]) -> dict[str, str]:
    """Types an upload's columns are read with at least (the converter's type hints)."""
    return {c.name: c.type for c in current}


def evolve(
    current: Sequence[ColumnSpec],
    upload: Sequence[ColumnSpec],
    rule: SchemaRule,
    *,
    keep_rows: bool = True,
) -> tuple[list[ColumnSpec], SchemaChange | None]:
    """The dataset's columns after taking ``upload`` under ``rule``, and what changed (None
    when nothing did). ``keep_rows``: older rows stay (append/upsert), so an added column is
    nullable. Raises SchemaConflict naming the columns and the rule that would allow it."""
    mine = {c.name: c for c in current}
    theirs = {c.name: c for c in upload}
    missing = [c.name for c in current if c.name not in theirs]
    added = [c for c in upload if c.name not in mine]
    widened = {
        n: widest(mine[n].type, c.type)
        for n, c in theirs.items()
        if n in mine and widest(mine[n].type, c.type) != mine[n].type
    }
    if rule == "strict" and (missing or added or widened):
        parts = [f"missing {missing}"] * bool(missing) + [f"new {[c.name for c in added]}"] * bool(
            added
        )
        parts += [f"{n} {mine[n].type} -> {t}" for n, t in widened.items()]
        raise SchemaConflict(
            f"the upload's columns differ from the dataset's ({'; '.join(parts)}); "
            "schema=evolve adds and widens columns, schema=any also drops them"
        )
    if rule == "evolve" and missing:
        raise SchemaConflict(
            f"the upload lacks column(s) {missing}; schema=any drops them from the dataset"
        )
    columns = [
        ColumnSpec(
            name=c.name,
            type=widened.get(c.name, c.type),
            nullable=(c.nullable and keep_rows) or theirs[c.name].nullable,
        )
        for c in current
        if c.name in theirs
    ]
    columns += [c.model_copy(update={"nullable": c.nullable or keep_rows}) for c in added]
    if not (missing or added or widened):
        return columns, None
    change = SchemaChange(added=[c.name for c in added], widened=widened, dropped=missing)
    return columns, change


def fingerprint_of(columns: Sequence[ColumnSpec]) -> str:
    return fingerprint([(c.name, c.type) for c in columns])
