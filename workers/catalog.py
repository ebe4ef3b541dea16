"""Catalog worker: registers datasets and publishes every change as an event.

Stateless: each request reads the dataset's last event from the stream and appends the next
one with an expected-last-subject-sequence check, so racing replicas cannot both win (the
loser re-reads and re-decides). Manifests are mirrored as Parquet under ``_catalog/`` for
``lakehouse catalog restore``; a periodic sweep deletes orphaned data objects.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from nats.aio.msg import Msg

from lakehouse.platform import faults
from lakehouse.platform.errors import Conflict, NotFound, Unavailable
from lakehouse.platform.rpc import parse
from lakehouse.platform.runtime import Serve, Worker, stop_task
from lakehouse.tables import catalog, gc
from schemas import subjects as S
from schemas.catalog import (
    CatalogEvent,
    DatasetList,
    DeleteReply,
    History,
    HistoryEntry,
    Manifest,
    NameRequest,
    RegisterReply,
    RegisterRequest,
    dataset_id,
)

log = logging.getLogger("workers.catalog")

MAX_ATTEMPTS = 20


class CatalogWorker(Worker):
    kind = "catalog"

    def serves(self) -> list[Serve]:
        return [
            Serve(S.CATALOG_REGISTER, self.register),
            Serve(S.CATALOG_GET, self.get),
            Serve(S.CATALOG_LIST, self.list),
            Serve(S.CATALOG_HISTORY, self.history),
            Serve(S.CATALOG_DELETE, self.delete),
        ]

    async def setup(self) -> None:
        await self.reconcile_mirror()
        self._gc: asyncio.Task[None] | None = None
        if self.rt.settings.catalog.gc_interval > 0:
            self._gc = asyncio.create_task(self.gc_loop())

    async def teardown(self) -> None:
        if self._gc:
            await stop_task(self._gc)

    async def register(self, msg: Msg) -> bytes:
        req = parse(RegisterRequest, msg.data)  # the model checks the name (400)
        for _ in range(MAX_ATTEMPTS):
            entry = await catalog.last_event(self.rt.js, req.name)
            cur = entry.event.manifest if entry and entry.event.type == "registered" else None
            if cur is not None and cur.last_request == req.request_id:
                # A repeat (redelivered ingest): answer as the first time, change nothing.
                assert entry is not None
                existing = cur.created_at != cur.updated_at
                return (
                    RegisterReply(manifest=cur, existing=existing, catalog_seq=entry.seq)
                    .model_dump_json()
                    .encode()
                )
            if cur is not None and cur.schema_fingerprint != req.schema_fingerprint:
                raise Conflict(
                    f"dataset {req.name!r} is registered with schema fingerprint "
                    f"{cur.schema_fingerprint}; this data has {req.schema_fingerprint}. "
                    "Ingest under another name, or delete the dataset first.",
                    error="schema fingerprint conflict",
                )
            event = self.next_registration(req, cur, entry.event.revision if entry else 0)
            faults.point(self.rt.settings, "catalog.before_publish")
            try:
                seq = await catalog.publish(self.rt.js, event, entry.seq if entry else 0)
            except catalog.SequenceConflict:
                continue  # another replica changed it first: re-read and decide again
            faults.point(self.rt.settings, "catalog.after_publish")
            assert event.manifest is not None
            await self.mirror(event.manifest)
            reply = RegisterReply(
                manifest=event.manifest, existing=cur is not None, catalog_seq=seq
            )
            return reply.model_dump_json().encode()
        raise Unavailable(f"dataset {req.name!r} is changing too fast; retry")

    @staticmethod
    def next_registration(
        req: RegisterRequest, cur: Manifest | None, last_revision: int
    ) -> CatalogEvent:
        now = datetime.now(UTC)
        keys = {o.key for o in req.objects}
        if req.mode == "append" and cur is not None:
            have = {c.key for c in cur.objects}
            objects = [*cur.objects, *(o for o in req.objects if o.key not in have)]
            nullable = {c.name: c.nullable for c in cur.columns}
            columns = [
                c.model_copy(update={"nullable": c.nullable or nullable.get(c.name, False)})
                for c in req.columns
            ]
            replaced = []
        else:
            objects, columns = list(req.objects), list(req.columns)
            replaced = [o for o in (cur.objects if cur else []) if o.key not in keys]
        manifest = Manifest(
            dataset_id=dataset_id(req.name),
            name=req.name,
            schema_fingerprint=req.schema_fingerprint,
            columns=columns,
            objects=objects,
            created_at=cur.created_at if cur else now,
            updated_at=now,
            row_count=sum(o.rows for o in objects),
            revision=last_revision + 1,
            last_request=req.request_id,
        )
        return CatalogEvent(
            type="registered",
            name=req.name,
            revision=manifest.revision,
            at=now,
            manifest=manifest,
            replaced_objects=replaced,
        )

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
                await gc.sweep(self.rt.js, self.rt.storage, settings.gc_grace)
            except Exception as exc:
                log.warning("gc sweep failed", extra={"error": str(exc)})
