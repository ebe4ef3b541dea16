"""Filtered search's id sets: a SQL predicate over an index's dataset, resolved to the
matching ids through a query worker (the same sandbox as ``/v1/sql``), grouped by partition
into one Arrow IPC stream and cached until a catalog event changes a dataset the predicate
reads. Events are pushed to the gateway by an ordered consumer on the catalog stream (no
polling); an event that arrives while a resolution is in flight keeps its result out of the
cache, and every resolution waits for the query worker to have applied the newest event the
gateway has seen.

The id set travels to the vector workers in the form ``lakehouse.vectors.idsets`` owns. A
predicate may match at most :func:`id_cap` rows (``limits.max_filter_ids``): more is a 400.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from gateway import limits
from lakehouse.platform import lazy
from lakehouse.platform.config import Settings
from lakehouse.platform.errors import BadRequest
from lakehouse.vectors.idsets import IdSet, encode
from schemas.catalog import CatalogEvent
from schemas.query import SqlRequest
from schemas.vectors import IndexSpec

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
else:
    duckdb = lazy.module("duckdb")
    pa = lazy.module("pyarrow")

log = logging.getLogger("gateway.filters")


@dataclass(frozen=True)
class Entry:
    ids: IdSet
    tables: frozenset[str] | None  # datasets the predicate reads; None: unknown (any)


def tables_read(sql: str) -> frozenset[str] | None:
    try:
        return frozenset(t.lower() for t in duckdb.get_table_names(sql))
    except duckdb.Error:
        return None


Resolve = Callable[[SqlRequest], Awaitable["pa.Table"]]


def id_cap(settings: Settings) -> tuple[int, str]:
    """The most rows a filter may match and the setting that says so: ``limits.max_filter_ids``,
    or ``query.max_rows_arrow`` where that is lower (the query worker cuts an Arrow result
    there, whoever asks)."""
    ids, rows = settings.limits.max_filter_ids, settings.query.max_rows_arrow
    return (ids, "limits.max_filter_ids") if ids <= rows else (rows, "query.max_rows_arrow")


class Filters:
    """Resolved id sets by (index, predicate), least recently used first out past
    ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.entries: OrderedDict[tuple[str, str, int, str], Entry] = OrderedDict()
        self.size = 0
        self.epoch = 0  # bumped by every catalog event: an in-flight result older is not kept
        self.live = False  # True once catalog events are followed: only then is anything kept
        self.hits = 0
        self.misses = 0

    async def ids(
        self,
        spec: IndexSpec,
        predicate: str,
        min_catalog_seq: int,
        run: Resolve,
        cap: int,
        setting: str = "limits.max_filter_ids",
    ) -> tuple[IdSet, bool]:
        """The id set of ``predicate`` over ``spec``'s dataset and whether it came from the
        cache. ``run`` executes the SQL on a query worker (Arrow reply, at most ``cap`` rows);
        more than ``cap`` matches is a 400 naming ``setting``."""
        if not spec.dataset or not spec.id_column:
            raise BadRequest(
                f"index {spec.name!r} has no dataset/id_column, so it cannot be filtered; "
                "create it with them (or through ingest's auto-embed)"
            )
        key = (spec.name, str(spec.created_at), spec.partitions, predicate)
        hit = self.entries.get(key)
        if hit is not None:
            self.entries.move_to_end(key)
            self.hits += 1
            return hit.ids, True
        self.misses += 1
        await lazy.loaded("duckdb", "pyarrow")  # the process's first filter: imports
        col = '"' + spec.id_column.replace('"', '""') + '"'
        sql = f'SELECT CAST({col} AS VARCHAR) AS id FROM "{spec.dataset}" WHERE {predicate}'
        epoch = self.epoch
        req = SqlRequest(sql=sql, format="arrow", min_catalog_seq=min_catalog_seq, max_rows=cap)
        table = await run(req)
        if (table.schema.metadata or {}).get(b"lakehouse.truncated") == b"true":
            raise BadRequest(
                f"the filter matches more than {cap} rows, over the limit {cap} ({setting}); "
                "narrow it",
                error=limits.ERROR,
            )
        ids = [i for i in table.column("id").to_pylist() if i is not None]
        found = encode(ids, spec.partitions)
        if self.live and epoch == self.epoch and len(found.blob) <= self.budget:
            self.entries[key] = Entry(found, tables_read(sql))
            self.size += len(found.blob)
            while self.size > self.budget:
                _, old = self.entries.popitem(last=False)
                self.size -= len(old.ids.blob)
        return found, False

    def changed(self, dataset: str) -> None:
        """A catalog event for ``dataset``: forget every id set that reads it."""
        self.epoch += 1
        name = dataset.lower()
        for key, entry in list(self.entries.items()):
            if entry.tables is None or name in entry.tables:
                del self.entries[key]
                self.size -= len(entry.ids.blob)

    def clear(self) -> None:
        self.epoch += 1
        self.entries.clear()
        self.size = 0

    async def on_event(self, msg: Msg) -> None:
        try:
            self.changed(CatalogEvent.model_validate_json(msg.data).name)
        except ValueError as exc:
            log.warning("unreadable catalog event", extra={"error": str(exc)[:200]})
            self.clear()
