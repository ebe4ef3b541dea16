"""Which datasets a SQL statement reads, from DuckDB's own parser (no binding, no data).

Used where a key limited to some datasets sends SQL: the statement's table names must all be
datasets it may see. Table functions (``query_table('x')``, ``query('...')``) could name a
table in a string, so a statement using any is reported as such (:class:`Names`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lakehouse.platform import lazy

if TYPE_CHECKING:
    import duckdb
else:
    duckdb = lazy.module("duckdb")

_local = threading.local()


@dataclass
class Names:
    tables: set[str] = field(default_factory=set)  # every table name read, CTE names too
    ctes: set[str] = field(default_factory=set)  # names the statement defines (WITH)
    table_functions: set[str] = field(default_factory=set)
    error: str | None = None  # the parser's message when the SQL does not parse


def _parse(sql: str) -> dict[str, Any]:
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
    row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    return json.loads(row[0]) if row else {"error": True, "error_message": "nothing to parse"}


def referenced(sql: str) -> Names:
    """Table names, CTE names and table functions of ``sql``. A CTE's name is not taken off
    the tables: inside a non-recursive CTE its own name means the table of that name."""
    doc = _parse(sql)
    if doc.get("error"):
        return Names(error=str(doc.get("error_message", "does not parse")))
    out = Names()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "BASE_TABLE":
                out.tables.add(str(node.get("table_name", "")))
            elif kind == "TABLE_FUNCTION":
                fn = node.get("function", {})
                out.table_functions.add(str(fn.get("function_name", "?")))
            for entry in node.get("cte_map", {}).get("map", []) if "cte_map" in node else []:
                out.ctes.add(str(entry.get("key", "")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return out
