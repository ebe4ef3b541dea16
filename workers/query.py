"""Query worker: DuckDB views that follow catalog events as they arrive; sandboxed SQL.

On start it subscribes to the catalog stream with "last per subject" delivery, which replays
each dataset's current state and then every new event, so views are created, replaced and
dropped with no timer. Objects on S3 are copied once into a local cache (they are immutable,
so the cache never goes stale); objects on the file backend are read in place. User SQL runs
on its own cursor in a thread, limited to one SELECT, with file access confined to the
datasets' objects, a row cap, a statement timeout and a size cap: the result is serialised
(JSON or Arrow IPC) batch by batch as DuckDB yields it, and refused (413) once it passes
``limits.max_sql_result_bytes``, before the rest is read. Rows by id (the rows shown with
search hits) come from an in-memory copy of the dataset, built on first use and dropped when
its catalog event arrives (``query.row_cache_bytes`` in all, least recently used first).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from typing import Any

import duckdb
import pyarrow as pa
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from lakehouse.platform import metrics
from lakehouse.platform.errors import (
    BadRequest,
    Forbidden,
    LakehouseError,
    NotFound,
    Timeout,
)
from lakehouse.platform.natsauth import Uses
from lakehouse.platform.rpc import parse
from lakehouse.platform.runtime import Serve, Worker
from lakehouse.platform.storage import keys
from lakehouse.tables import catalog
from lakehouse.tables.rows import RowTable
from lakehouse.tables.sqljson import Result
from lakehouse.tables.views import ident, literal, local_view_sql
from schemas import subjects as S
from schemas.catalog import CatalogEvent, Manifest
from schemas.query import RowsRequest, SqlRequest

log = logging.getLogger("workers.query")

ALLOWED = {"SELECT"}


class QueryWorker(Worker):
    kind = "query"
    uses = Uses(reads=(S.STREAM_CATALOG,), follows=(S.STREAM_CATALOG,))

    def serves(self) -> list[Serve]:
        return [Serve(S.QUERY_SQL, self.sql), Serve(S.QUERY_ROWS, self.rows)]

    async def setup(self) -> None:
        st = self.rt.settings
        self.applied_seq = 0
        self.applied = asyncio.Condition()
        self.view_errors = 0
        self.row_tables: OrderedDict[tuple[str, str], RowTable] = OrderedDict()
        self.versions: dict[str, int] = {}  # per dataset, bumped by each of its events
        self.too_big: set[tuple[str, str]] = set()
        self.warming: set[asyncio.Task[Any]] = set()
        root = self.rt.storage.local_path(f"{keys.DATASETS}x")
        self.cache = (st.data_dir / "cache" / "objects").resolve()  # S3 objects' local copies
        # File backend: <root>/datasets/ (staging and _catalog stay unreadable); S3: the cache.
        allowed = root.parent if root is not None else self.cache
        allowed.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {"threads": st.query.threads} if st.query.threads else {}
        self.db = duckdb.connect(":memory:", config=config)
        self.db.execute(f"SET allowed_directories = [{literal(str(allowed) + '/')}]")
        self.db.execute("SET enable_external_access = false")
        self.db.execute("SET autoinstall_known_extensions = false")
        self.db.execute("SET autoload_known_extensions = false")
        self.db.execute("SET lock_configuration = true")
        self.sub = await self.rt.js.subscribe(
            S.all_under(S.CATALOG_EVENTS_PREFIX),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            cb=self.on_event,
        )

    async def teardown(self) -> None:
        for task in list(self.warming):
            task.cancel()
        await self.sub.unsubscribe()
        self.db.close()

    # ---- catalog events -> views ------------------------------------------------------
    async def on_event(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        try:
            event = CatalogEvent.model_validate_json(msg.data)
            self.versions[event.name] = self.versions.get(event.name, 0) + 1
            stale = {k: t for k, t in self.row_tables.items() if k[0] == event.name}
            for key in stale:
                del self.row_tables[key]
            self.too_big = {k for k in self.too_big if k[0] != event.name}
            if event.type == "registered" and event.manifest is not None:
                await self.create_view(event.manifest)
                for key, old in stale.items():  # in use: load the new rows now, not on use
                    task = asyncio.create_task(self.warm_rows(*key, old, event))
                    self.warming.add(task)
                    task.add_done_callback(self.warming.discard)
            else:
                self.db.execute(f"DROP VIEW IF EXISTS {ident(event.name)}")
            log.info("view updated", extra={"dataset": event.name, "event": event.type, "seq": seq})
        except Exception as exc:  # one bad manifest must not block the others
            self.view_errors += 1
            log.error("view update failed", extra={"subject": msg.subject, "error": str(exc)})
        async with self.applied:
            self.applied_seq = max(self.applied_seq, seq)
            self.applied.notify_all()

    async def create_view(self, m: Manifest) -> None:
        self.db.execute(await local_view_sql(self.rt.storage, m, self.cache))

    async def wait_applied(self, seq: int) -> None:
        if seq <= self.applied_seq:
            return
        try:
            async with self.applied:
                await asyncio.wait_for(
                    self.applied.wait_for(lambda: self.applied_seq >= seq),
                    self.rt.settings.query.read_your_writes_wait,
                )
        except TimeoutError:
            log.warning("catalog event not applied in time", extra={"wanted": seq})

    # ---- SQL ---------------------------------------------------------------------------
    async def sql(self, msg: Msg) -> bytes:
        req = parse(SqlRequest, msg.data)
        await self.wait_applied(req.min_catalog_seq)
        qs = self.rt.settings.query
        cap = qs.max_rows_arrow if req.format == "arrow" else qs.max_rows
        max_rows = min(req.max_rows or cap, cap)
        timeout = min(req.timeout or qs.timeout, qs.timeout)
        schema = await self.time_travel(req.as_of) if req.as_of else None
        cur = self.db.cursor()
        if schema is not None:
            cur.execute(f"SET search_path = {literal(schema + ',main')}")
        work = asyncio.ensure_future(
            asyncio.to_thread(self.run, cur, req.sql, max_rows, req.format)
        )
        try:
            return await asyncio.wait_for(asyncio.shield(work), timeout)
        except TimeoutError:
            cur.interrupt()
            await asyncio.gather(work, return_exceptions=True)
            raise Timeout(
                f"the statement ran longer than {timeout:g} s and was cancelled"
            ) from None
        finally:
            if work.done():
                cur.close()
            if schema is not None:
                self.db.execute(f"DROP SCHEMA IF EXISTS {ident(schema)} CASCADE")

    async def time_travel(self, as_of: dict[str, int]) -> str:
        """A schema of this request's own holding a view of each dataset at its revision
        (queried first, through the cursor's search path; the others stay current)."""
        schema = f"as_of_{uuid.uuid4().hex}"
        views = []
        for name, revision in as_of.items():
            m = await catalog.at_revision(self.rt.nc, self.rt.storage, name, revision)
            target = f"{ident(schema)}.{ident(m.name)}"
            views.append(await local_view_sql(self.rt.storage, m, self.cache, name=target))
        self.db.execute(f"CREATE SCHEMA {ident(schema)}")
        try:
            for view in views:
                self.db.execute(view)
        except BaseException:  # e.g. an object collected since the check: leave nothing behind
            self.db.execute(f"DROP SCHEMA {ident(schema)} CASCADE")
            raise
        return schema

    def run(self, cur: duckdb.DuckDBPyConnection, sql: str, max_rows: int, fmt: str) -> bytes:
        """The statement's result, serialised (:class:`Result`): at most ``max_rows`` rows."""
        try:
            statements = cur.extract_statements(sql)
            if len(statements) != 1:
                raise BadRequest(
                    f"send exactly one statement (got {len(statements)})", error="invalid SQL"
                )
            kind = statements[0].type.name
            if kind not in ALLOWED:
                raise Forbidden(
                    f"only SELECT queries are allowed (got {kind})", error="forbidden statement"
                )
            rel = cur.sql(sql)
            types = [str(t) for t in rel.types]
            reader = rel.to_arrow_reader(8192)
            limit = self.rt.settings.limits.max_sql_result_bytes
            result = Result(fmt, reader.schema, types, limit)
            truncated = False
            for batch in reader:
                if result.rows + batch.num_rows > max_rows:
                    batch, truncated = batch.slice(0, max_rows - result.rows), True
                result.add(batch)
                if truncated:
                    break
            return result.finish(truncated)
        except LakehouseError:
            raise
        except duckdb.InterruptException:
            raise
        except duckdb.PermissionException as exc:
            raise Forbidden(self.redact(str(exc)), error="access denied") from None
        except duckdb.Error as exc:
            raise BadRequest(self.redact(str(exc)), error="SQL error") from None

    # ---- rows by id ----------------------------------------------------------------------
    async def rows(self, msg: Msg) -> bytes:
        req = parse(RowsRequest, msg.data)
        await self.wait_applied(req.min_catalog_seq)
        rt = await self.row_table(req.dataset, req.id_column)
        if rt is None:  # over the budget: read just these ids from the objects
            rt = await asyncio.to_thread(self.load_rows, req.dataset, req.id_column, req.ids)
        body = {
            "columns": [
                {"name": n, "type": t} for n, t in zip(rt.table.column_names, rt.types, strict=True)
            ],
            "long": rt.long,
            "rows": rt.lookup(req.ids),
        }
        return json.dumps(body, ensure_ascii=False).encode()

    async def row_table(self, dataset: str, id_column: str) -> RowTable | None:
        """The dataset's cached rows (loaded on first use); None when it exceeds the budget."""
        key = (dataset, id_column)
        if key in self.row_tables:
            metrics.cache_lookup("rows", "hit")
            self.row_tables.move_to_end(key)
            return self.row_tables[key]
        if key in self.too_big:
            metrics.cache_lookup("rows", "bypass")
            return None
        metrics.cache_lookup("rows", "miss")
        version = self.versions.get(dataset)
        rt = await asyncio.to_thread(self.load_rows, dataset, id_column)
        if self.versions.get(dataset) == version:  # changed while loading: use, don't keep
            self.keep(key, rt)
        return rt

    def keep(self, key: tuple[str, str], rt: RowTable) -> None:
        budget = self.rt.settings.query.row_cache_bytes
        if rt.nbytes > budget:
            self.too_big.add(key)
            return
        self.row_tables[key] = rt
        while sum(t.nbytes for t in self.row_tables.values()) > budget:
            self.row_tables.popitem(last=False)

    async def warm_rows(
        self, dataset: str, id_column: str, old: RowTable, event: CatalogEvent
    ) -> None:
        """Rows of the dataset's new revision: for an upsert by the same key, the old copy
        less the delete set's keys plus the new object's rows (the unchanged objects are not
        read again); otherwise loaded whole."""
        key = (dataset, id_column)
        try:
            version = self.versions.get(dataset)
            m, change = event.manifest, event.change
            if (
                m is not None
                and change is not None
                and change.mode == "upsert"
                and change.schema_change is None
                and m.key == id_column
            ):
                new = [o for o in m.objects if o.revision == m.revision]
                gone = [d for d in m.deletes if d.revision == m.revision]
                paths = [
                    [str(await self.rt.storage.readable_path(o.key, self.cache)) for o in objs]
                    for objs in (new, gone)
                ]
                started = time.perf_counter()
                rt = await asyncio.to_thread(old.follow, *paths)
                if self.versions.get(dataset) == version and key not in self.row_tables:
                    self.keep(key, rt)
                    log.info(
                        "rows followed the upsert",
                        extra={
                            "dataset": dataset,
                            "rows": len(rt.positions),
                            "ms": round((time.perf_counter() - started) * 1000, 1),
                        },
                    )
                    return
            await self.row_table(dataset, id_column)
        except Exception as exc:  # the next lookup reports it
            log.warning("rows not preloaded", extra={"dataset": dataset, "error": str(exc)})

    def load_rows(self, dataset: str, id_column: str, ids: list[str] | None = None) -> RowTable:
        sql = f"SELECT * FROM {ident(dataset)}"
        if ids is not None:
            wanted = ", ".join(literal(i) for i in ids) or "NULL"
            sql += f" WHERE CAST({ident(id_column)} AS VARCHAR) IN ({wanted})"
        cur = self.db.cursor()
        try:
            rel = cur.sql(sql)
            types = [str(t) for t in rel.types]
            table = rel.to_arrow_table()
        except duckdb.CatalogException:
            raise NotFound(f"no dataset named {dataset!r}") from None
        except duckdb.BinderException:
            table, types = pa.table({}), []
        finally:
            cur.close()
        try:
            return RowTable.build(table, types, id_column)
        except KeyError:
            raise BadRequest(
                f"dataset {dataset!r} has no column {id_column!r}; columns: {table.column_names}"
            ) from None

    def redact(self, text: str) -> str:
        for secret in self.rt.settings.secret_values():
            text = text.replace(secret, "***")
        return text
