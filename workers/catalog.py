"""Catalog worker: registers datasets and publishes every change as an event.

Each request reads the dataset's last event from the stream and appends the next
one with an expected-last-subject-sequence check, so racing replicas cannot both win (the
loser re-reads and re-decides). Manifests are mirrored as Parquet under ``_catalog/`` for
``lakehouse catalog restore``; a periodic sweep deletes orphaned data objects. Compaction
(``lakehouse.catalog.compact``, and on its own once a dataset's delete sets pass
``catalog.compact_deleted_ratio`` of its rows or it has more than ``compact_max_objects``
objects, also checked at start) rewrites a dataset's rows into one new object.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from nats.aio.msg import Msg

from lakehouse.platform import faults
from lakehouse.platform.errors import Conflict, NotFound, Unavailable
from lakehouse.platform.natsauth import Uses
from lakehouse.platform.rpc import parse
from lakehouse.platform.runtime import Serve, Worker, stop_task
from lakehouse.tables import catalog, gc, merge
from lakehouse.tables.evolve import SchemaConflict, evolve, fingerprint_of
from lakehouse.tables.views import local_view_sql
from schemas import subjects as S
from schemas.catalog import (
    CatalogEvent,
    ChangeSummary,
    CompactRequest,
    DatasetList,
    DeleteReply,
    History,
    HistoryEntry,
    Manifest,
    NameRequest,
    ObjectRef,
    RegisterReply,
    RegisterRequest,
    dataset_id,
)

log = logging.getLogger("workers.catalog")

MAX_ATTEMPTS = 20


class CatalogWorker(Worker):
    kind = "catalog"
    uses = Uses(publishes=(S.all_under(S.CATALOG_EVENTS_PREFIX),), reads=(S.STREAM_CATALOG,))

    def serves(self) -> list[Serve]:
        return [
            Serve(S.CATALOG_REGISTER, self.register),
            Serve(S.CATALOG_GET, self.get),
            Serve(S.CATALOG_LIST, self.list),
            Serve(S.CATALOG_HISTORY, self.history),
            Serve(S.CATALOG_DELETE, self.delete),
            Serve(S.CATALOG_COMPACT, self.compact_request),
        ]

    async def setup(self) -> None:
        self.compacting: dict[str, asyncio.Task[None]] = {}
        await self.reconcile_mirror()
        self._gc: asyncio.Task[None] | None = None
        if self.rt.settings.catalog.gc_interval > 0:
            self._gc = asyncio.create_task(self.gc_loop())
        for entry in (await catalog.current(self.rt.js)).values():
            m = entry.event.manifest
            if entry.event.type == "registered" and m is not None and self.needs_compaction(m):
                self.compact_later(m.name)  # e.g. a compaction cut short by a crash

    async def teardown(self) -> None:
        if self._gc:
            await stop_task(self._gc)
        for task in list(self.compacting.values()):
            await stop_task(task)

    async def register(self, msg: Msg) -> bytes:
        req = parse(RegisterRequest, msg.data)  # the model checks the name (400)
        return (await self.commit(req)).model_dump_json().encode()

    async def commit(self, req: RegisterRequest) -> RegisterReply:
        """Append the registration's event (idempotent by request id), mirror the manifest."""
        for _ in range(MAX_ATTEMPTS):
            entry = await catalog.last_event(self.rt.js, req.name)
            cur = entry.event.manifest if entry and entry.event.type == "registered" else None
            if cur is not None and cur.last_request == req.request_id:
                # A repeat (redelivered ingest): answer as the first time, change nothing.
                assert entry is not None
                existing = cur.created_at != cur.updated_at
                return RegisterReply(manifest=cur, existing=existing, catalog_seq=entry.seq)
            event = self.next_registration(req, cur, entry.event.revision if entry else 0)
            faults.point(self.rt.settings, "catalog.before_publish")
            try:
                seq = await catalog.publish(self.rt.js, event, entry.seq if entry else 0)
            except catalog.SequenceConflict:
                continue  # another replica changed it first: re-read and decide again
            faults.point(self.rt.settings, "catalog.after_publish")
            assert event.manifest is not None
            await self.mirror(event.manifest)
            if self.needs_compaction(event.manifest):
                self.compact_later(req.name)
            return RegisterReply(manifest=event.manifest, existing=cur is not None, catalog_seq=seq)
        raise Unavailable(f"dataset {req.name!r} is changing too fast; retry")

    @staticmethod
    def next_registration(
        req: RegisterRequest, cur: Manifest | None, last_revision: int
    ) -> CatalogEvent:
        """The event ``req`` makes on top of ``cur`` (Conflict when it may not)."""
        now = datetime.now(UTC)
        revision = last_revision + 1
        base = cur.revision if cur is not None else 0
        if req.mode in ("upsert", "compact") and req.base_revision not in (None, base):
            raise Conflict(
                f"dataset {req.name!r} changed since revision {req.base_revision} (now {base}); "
                "compute the change again",
                error="dataset changed",
            )
        stamp = {"revision": revision}
        new = [
            o.model_copy(update={**stamp, "fingerprint": o.fingerprint or req.schema_fingerprint})
            for o in req.objects
        ]
        new_rows = sum(o.rows for o in new)
        if cur is None:
            columns, change = list(req.columns), None
        elif req.mode == "compact":
            columns, change = list(cur.columns), None
        else:
            try:
                columns, change = evolve(
                    cur.columns, req.columns, req.schema_rule, keep_rows=req.mode != "replace"
                )
            except SchemaConflict as exc:
                raise Conflict(
                    f"dataset {req.name!r} is registered with schema fingerprint "
                    f"{cur.schema_fingerprint}; this data has {req.schema_fingerprint}: {exc}",
                    error="schema fingerprint conflict",
                ) from None
        old = (
            [
                o if o.fingerprint else o.model_copy(update={"fingerprint": cur.schema_fingerprint})
                for o in cur.objects
            ]
            if cur
            else []
        )
        old_deletes = list(cur.deletes) if cur else []
        rows_before = cur.row_count if cur else 0
        summary = req.change or ChangeSummary(mode=req.mode)
        if cur is not None and req.mode in ("append", "upsert"):
            have = {o.key for o in old}
            added = [o for o in new if o.key not in have]  # identical content: already there
            objects = [*old, *added]
            deletes = [*old_deletes, *(d.model_copy(update=stamp) for d in req.deletes)]
            replaced: list[ObjectRef] = []
            if req.mode == "append":
                summary = ChangeSummary(mode="append", inserted=sum(o.rows for o in added))
            row_count = rows_before + summary.inserted - summary.deleted
        else:
            objects, deletes = new, []
            keys = {o.key for o in new}
            replaced = [o for o in old if o.key not in keys] + old_deletes
            row_count = new_rows
            if req.mode == "compact":
                if cur is not None and row_count != rows_before:
                    raise Conflict(
                        f"compaction of {req.name!r} wrote {row_count} rows, not {rows_before}",
                        error="dataset changed",
                    )
                summary = ChangeSummary(mode="compact")
            elif req.mode != "upsert" or cur is None:
                summary = ChangeSummary(mode=req.mode, inserted=new_rows, deleted=rows_before)
        summary = summary.model_copy(update={"schema_change": change})
        manifest = Manifest(
            dataset_id=dataset_id(req.name),
            name=req.name,
            schema_fingerprint=(
                req.schema_fingerprint
                if cur is None
                else cur.schema_fingerprint
                if change is None
                else fingerprint_of(columns)
            ),
            columns=columns,
            objects=objects,
            deletes=deletes,
            created_at=cur.created_at if cur else now,
            updated_at=now,
            row_count=row_count,
            revision=revision,
            last_request=req.request_id,
            key=req.key or (cur.key if cur and req.mode != "replace" else None),
        )
        return CatalogEvent(
            type="registered",
            name=req.name,
            revision=manifest.revision,
            at=now,
            manifest=manifest,
            replaced_objects=replaced,
            change=summary,
        )

    # ---- compaction ----------------------------------------------------------------------
    def needs_compaction(self, m: Manifest) -> bool:
        st = self.rt.settings.catalog
        deleted = sum(d.rows for d in m.deletes)
        return (bool(m.deletes) and deleted >= st.compact_deleted_ratio * max(m.row_count, 1)) or (
            len(m.objects) > st.compact_max_objects
        )

    def compact_later(self, name: str) -> None:
        """Compact ``name`` in the background (once at a time per dataset in this process)."""
        if name in self.compacting:
            return

        async def run() -> None:
            try:
                await self.compact(name)
            except Exception as exc:  # the next upsert or start tries again
                log.warning("compaction failed", extra={"dataset": name, "error": str(exc)})
            finally:
                self.compacting.pop(name, None)

        self.compacting[name] = asyncio.create_task(run())

    async def compact_request(self, msg: Msg) -> bytes:
        name = parse(CompactRequest, msg.data).name
        return (await self.compact(name)).model_dump_json().encode()

    async def compact(self, name: str) -> RegisterReply:
        """Rewrite the dataset's current rows into one object; retried when it changes
        meanwhile. A dataset with one object and no delete sets is left as it is."""
        for _ in range(MAX_ATTEMPTS):
            entry = await catalog.last_event(self.rt.js, name)
            cur = entry.event.manifest if entry and entry.event.type == "registered" else None
            if entry is None or cur is None:
                raise NotFound(f"no dataset named {name!r}")
            if not cur.deletes and len(cur.objects) <= 1:
                return RegisterReply(manifest=cur, existing=True, catalog_seq=entry.seq)
            if not await catalog.readable(self.rt.storage, cur):
                raise Conflict(
                    f"dataset {name!r} revision {cur.revision} lists objects that are not in "
                    "storage; it cannot be compacted",
                    error="objects missing",
                )
            started = asyncio.get_running_loop().time()
            with tempfile.TemporaryDirectory(prefix="lakehouse-compact-") as tmp:
                work = Path(tmp)
                view = await local_view_sql(self.rt.storage, cur, work, name=merge.CURRENT)
                out = work / "compacted.parquet"
                try:
                    rows = await asyncio.to_thread(merge.compact, view, out)
                except duckdb.Error as exc:  # an object registered by hand that is no Parquet
                    raise Conflict(
                        f"dataset {name!r} revision {cur.revision} cannot be compacted: its "
                        f"objects do not read as Parquet ({type(exc).__name__})",
                        error="objects unreadable",
                    ) from None
                obj = await catalog.store_object(
                    self.rt.storage, name, cur.schema_fingerprint, out, rows
                )
            faults.point(self.rt.settings, "catalog.compact.before_register")
            req = RegisterRequest(
                request_id=f"compact-{name}-{cur.revision}",
                name=name,
                schema_fingerprint=cur.schema_fingerprint,
                columns=cur.columns,
                objects=[obj],
                mode="compact",
                base_revision=cur.revision,
                key=cur.key,
            )
            try:
                reply = await self.commit(req)
            except Conflict as exc:
                if exc.error != "dataset changed":
                    raise
                continue  # an upsert landed meanwhile: compact the new revision
            log.info(
                "compacted",
                extra={
                    "dataset": name,
                    "revision": reply.manifest.revision,
                    "objects_before": len(cur.objects),
                    "delete_sets_before": len(cur.deletes),
                    "rows": rows,
                    "seconds": round(asyncio.get_running_loop().time() - started, 3),
                },
            )
            return reply
        raise Unavailable(f"dataset {name!r} is changing too fast to compact; retry")

    async def current_manifest(self, name: str) -> Manifest:
        entry = await catalog.last_event(self.rt.js, name)
        if entry is None or entry.event.manifest is None or entry.event.type != "registered":
            raise NotFound(f"no dataset named {name!r}")
        return entry.event.manifest

    async def get(self, msg: Msg) -> bytes:
        return (
            (await self.current_manifest(parse(NameRequest, msg.data).name))
            .model_dump_json()
            .encode()
        )

    async def list(self, msg: Msg) -> bytes:
        entries = await catalog.current(self.rt.js)
        manifests = [
            e.event.manifest
            for e in entries.values()
            if e.event.type == "registered" and e.event.manifest is not None
        ]
        return DatasetList(datasets=manifests, count=len(manifests)).model_dump_json().encode()

    async def history(self, msg: Msg) -> bytes:
        name = parse(NameRequest, msg.data).name
        events = await catalog.history(self.rt.nc, name)
        if not events:
            raise NotFound(f"no dataset named {name!r} has ever been registered")
        body = [HistoryEntry(seq=e.seq, **dict(e.event)) for e in events]
        return History(name=name, events=body).model_dump_json().encode()

    async def delete(self, msg: Msg) -> bytes:
        name = parse(NameRequest, msg.data).name
        for _ in range(MAX_ATTEMPTS):
            entry = await catalog.last_event(self.rt.js, name)
            if entry is None or entry.event.type != "registered" or entry.event.manifest is None:
                raise NotFound(f"no dataset named {name!r}")
            event = CatalogEvent(
                type="deleted",
                name=name,
                revision=entry.event.revision + 1,
                at=datetime.now(UTC),
                replaced_objects=entry.event.manifest.objects,
            )
            try:
                seq = await catalog.publish(self.rt.js, event, entry.seq)
            except catalog.SequenceConflict:
                continue
            await self.rt.storage.delete(catalog.manifest_key(name))
            return DeleteReply(name=name, deleted=True, catalog_seq=seq).model_dump_json().encode()
        raise Unavailable(f"dataset {name!r} is changing too fast; retry")

    async def mirror(self, manifest: Manifest) -> None:
        """Best effort: the stream is the truth; startup reconciles a missed write."""
        try:
            await catalog.save_manifest(self.rt.storage, manifest)
        except Exception as exc:
            log.warning(
                "manifest mirror failed", extra={"dataset": manifest.name, "error": str(exc)}
            )

    async def reconcile_mirror(self) -> None:
        """Make ``_catalog/`` match the stream (after a crash between publish and mirror)."""
        mirrored = {m.name: m.revision for m in await catalog.load_manifests(self.rt.storage)}
        for name, entry in (await catalog.current(self.rt.js)).items():
            m = entry.event.manifest
            if entry.event.type == "registered" and m is not None:
                if mirrored.get(name) != m.revision:
                    await self.mirror(m)
            elif name in mirrored:
                await self.rt.storage.delete(catalog.manifest_key(name))

    async def gc_loop(self) -> None:
        settings = self.rt.settings.catalog
        while True:
            await asyncio.sleep(settings.gc_interval)
            try:
                await gc.sweep(
                    self.rt.nc,
                    self.rt.storage,
                    settings.gc_grace,
                    keep_revisions=settings.keep_revisions,
                )
            except Exception as exc:
                log.warning("gc sweep failed", extra={"error": str(exc)})
