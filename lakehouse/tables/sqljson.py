"""Exact JSON for every DuckDB result type.

DECIMAL -> string (no float rounding); HUGEINT -> integer; DATE/TIME/TIMESTAMP -> ISO-8601;
INTERVAL -> ISO-8601 duration (``P1M2DT3S``); BLOB/BIT -> base64; LIST/STRUCT/MAP -> JSON
arrays/objects (a MAP with non-string keys -> ``[[key, value], ...]``); NaN/Infinity ->
the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has no such numbers).

:class:`Result` serialises a whole SQL result (JSON, or Arrow IPC) as its batches arrive,
refusing it once it passes a size limit (``limits.max_sql_result_bytes``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from lakehouse.platform import lazy
from lakehouse.platform.errors import TooLarge

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.types as pt
else:
    pa = lazy.module("pyarrow")
    pt = lazy.module("pyarrow.types")

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


class Result:
    """One SQL result serialised as its batches arrive (``json``: each batch's rows as JSON
    text; ``arrow``: the batches, written as one IPC stream at the end), refused with a 413
    as soon as its size passes ``limit`` bytes: one batch over at most is ever held."""

    def __init__(self, fmt: str, schema: pa.Schema, types: list[str], limit: int) -> None:
        self.fmt, self.schema, self.types, self.limit = fmt, schema, types, limit
        self.parts: list[bytes] = []  # json: each batch's rows, without the outer brackets
        self.batches: list[pa.RecordBatch] = []  # arrow
        self.size = 0
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self.rows += batch.num_rows
        if self.fmt == "arrow":
            self.batches.append(batch)
            self.size += batch.nbytes  # its IPC body, but for padding
        else:
            rows = table_rows(pa.Table.from_batches([batch]), self.types)
            self.parts.append(json.dumps(rows, ensure_ascii=False)[1:-1].encode())
            self.size += len(self.parts[-1]) + 2
        self.check(self.size, "at least ")

    def check(self, size: int, bound: str = "") -> None:
        if size > self.limit:
            raise TooLarge(
                f"SQL result of {bound}{size} bytes is over the limit {self.limit} "
                "(limits.max_sql_result_bytes); select fewer rows or columns",
                error="limit exceeded",
            )

    def finish(self, truncated: bool) -> bytes:
        if self.fmt == "arrow":
            sink = pa.BufferOutputStream()
            meta = {"lakehouse.truncated": str(truncated).lower()}
            with pa.ipc.new_stream(sink, self.schema.with_metadata(meta)) as writer:
                for batch in self.batches:
                    writer.write_batch(batch)
            out = bytes(sink.getvalue().to_pybytes())
        else:
            columns = [
                {"name": f.name, "type": t} for f, t in zip(self.schema, self.types, strict=True)
            ]
            head = json.dumps({"columns": columns}, ensure_ascii=False)[:-1].encode()
            tail = f'], "row_count": {self.rows}, "truncated": {str(truncated).lower()}}}'
            out = b"".join([head, b', "rows": [', b", ".join(self.parts), tail.encode()])
        self.check(len(out))
        return out
