"""The SQL view of a dataset, shared by the query worker and ``lakehouse replay``."""

from __future__ import annotations

from schemas.catalog import Manifest

DUCK_TYPES = {"int64": "BIGINT", "float64": "DOUBLE", "bool": "BOOLEAN", "string": "VARCHAR"}


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(m: Manifest, paths: list[str]) -> str:
    """``CREATE OR REPLACE VIEW`` for ``m`` over its objects at ``paths`` (same order)."""
    if m.objects:
        body = f"SELECT * FROM read_parquet([{', '.join(literal(p) for p in paths)}])"
    else:
        cols = ", ".join(f"NULL::{DUCK_TYPES[c.type]} AS {ident(c.name)}" for c in m.columns)
        body = f"SELECT {cols} WHERE false"
    return f"CREATE OR REPLACE VIEW {ident(m.name)} AS {body}"
