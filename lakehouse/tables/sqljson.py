"""Exact JSON for every DuckDB result type.

DECIMAL -> string (no float rounding); HUGEINT -> integer; DATE/TIME/TIMESTAMP -> ISO-8601;
INTERVAL -> ISO-8601 duration (``P1M2DT3S``); BLOB/BIT -> base64; LIST/STRUCT/MAP -> JSON
arrays/objects (a MAP with non-string keys -> ``[[key, value], ...]``); NaN/Infinity ->
the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has no such numbers).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.types as pt

Conv = Callable[[Any], Any]


def _float(v: float | None) -> Any:
    if v is None or math.isfinite(v):
        return v
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def _interval(v: Any) -> str | None:
    if v is None:
        return None
    months, days, nanos = v.months, v.days, v.nanoseconds
    out = "P"
    if months:
        out += f"{months}M"
    if days:
        out += f"{days}D"
    if nanos:
        secs = Decimal(nanos) / Decimal(1_000_000_000)
        out += f"T{secs.normalize():f}S"
    return out if out != "P" else "PT0S"


def _iso(v: dt.date | dt.time | None) -> str | None:
    return None if v is None else v.isoformat()


def _b64(v: bytes | None) -> str | None:
    return None if v is None else base64.b64encode(v).decode()


def _identity(v: Any) -> Any:
    return v


def converter(t: pa.DataType, duck_type: str = "") -> Conv:
    """A function mapping one Python value of Arrow type ``t`` to its JSON form."""
    if pt.is_dictionary(t):
        return converter(t.value_type)
    if pt.is_floating(t):
        return _float
    if pt.is_decimal(t):
        if duck_type.upper().startswith(("HUGEINT", "UHUGEINT")):
            return lambda v: None if v is None else int(v)
        return lambda v: None if v is None else str(v)
    if pt.is_temporal(t) and pt.is_interval(t):
        return _interval
    if pt.is_timestamp(t) or pt.is_date(t) or pt.is_time(t):
        return _iso
    if pt.is_duration(t):
        return lambda v: None if v is None else v.total_seconds()
    if pt.is_binary(t) or pt.is_large_binary(t) or pt.is_fixed_size_binary(t):
        return _b64
    if pt.is_map(t):
        kc, vc = converter(t.key_type), converter(t.item_type)
        string_keys = pt.is_string(t.key_type) or pt.is_large_string(t.key_type)

        def conv_map(v: Any) -> Any:
            if v is None:
                return None
            if string_keys:
                return {k: vc(x) for k, x in v}
            return [[kc(k), vc(x)] for k, x in v]

        return conv_map
    if pt.is_list(t) or pt.is_large_list(t) or pt.is_fixed_size_list(t):
        inner = converter(t.value_type)
        return lambda v: None if v is None else [inner(x) for x in v]
    if pt.is_struct(t):
        fields = [(t.field(i).name, converter(t.field(i).type)) for i in range(t.num_fields)]
        return lambda v: None if v is None else {n: c(v.get(n)) for n, c in fields}
    if pt.is_union(t):
        return lambda v: v  # the active member's value; nested floats stay as they are
    return _identity


def table_rows(table: pa.Table, duck_types: list[str]) -> list[list[Any]]:
    """Rows of ``table`` as JSON-ready lists, column converters chosen once per column."""
    columns = []
    for i, col in enumerate(table.columns):
        conv = converter(col.type, duck_types[i] if i < len(duck_types) else "")
        values = col.to_pylist()
        columns.append(values if conv is _identity else [conv(v) for v in values])
    return [list(r) for r in zip(*columns, strict=True)] if columns else []
