"""Ingest worker: CSV in storage -> Parquet object -> catalog registration, reporting progress.

A job's CSV arrives by claim check (``source_key``). It is converted with the dataset's
column types as hints. The Parquet object's key is content addressed
(``datasets/<name>/<fingerprint>/<sha256>.parquet``), so a redelivered job writes the same key
and the catalog's idempotency (request id = job id) makes the registration once. An upsert
(``mode=upsert``) stores only the changed rows and a delete set (:mod:`lakehouse.tables.merge`)
and, with auto-embed, embeds only the rows whose text changed.
Bad CSV fails the job at once (no retry) with a message naming the row/column; nothing is
registered and nothing it wrote is left in storage.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import string
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from nats.aio.msg import Msg
from pydantic import ValidationError

from lakehouse.platform import faults
from lakehouse.platform.bus import ConsumerSpec
from lakehouse.platform.errors import LakehouseError, NotFound, Permanent, RetryLater
from lakehouse.platform.natsauth import Uses
from lakehouse.platform.rpc import call
from lakehouse.platform.runtime import Consume, Worker
from lakehouse.platform.storage import keys, parts
from lakehouse.platform.storage.growing import Growing
from lakehouse.tables import catalog, merge, upserts
from lakehouse.tables.csv2parquet import Converted, CsvError, convert
from lakehouse.tables.evolve import SchemaConflict, fingerprint_of, hints
from lakehouse.tables.rows import rendered
from lakehouse.vectors import autoembed, texts
from lakehouse.vectors.batches import publish_deletes
from schemas import subjects as S
from schemas.catalog import (
    ChangeSummary,
    ColumnSpec,
    Manifest,
    ObjectRef,
    RegisterReply,
    RegisterRequest,
)
from schemas.ingest import (
    AutoEmbed,
    EmbedCounts,
    IngestRequest,
    IngestResult,
    JobError,
    JobStatus,
)
from schemas.vectors import IndexSpec

log = logging.getLogger("workers.ingest")

MAX_ATTEMPTS = 10  # upserts recomputed after racing another change of the dataset


def check_template(embed: AutoEmbed, columns: list[str]) -> None:
    fields = {f for _, f, _, _ in string.Formatter().parse(embed.text_template) if f}
    unknown = sorted(fields - set(columns))
    if unknown:
        raise Permanent(f"text_template names unknown column(s) {unknown}; columns: {columns}")
    if embed.id_column not in columns:
        raise Permanent(f"id_column {embed.id_column!r} is not a column; columns: {columns}")


PROGRESS_EVERY = 1.0  # seconds between progress updates


class IngestWorker(Worker):
    kind = "ingest"
    uses = Uses(
        publishes=(
            S.job("*"),
            S.CATALOG_REGISTER,
            S.index_def("*"),  # auto-embed creates its index
            S.embed_requests("*"),
            S.all_under(S.VECTORS_PREFIX),  # an upsert deletes the vectors of removed keys
        ),
        reads=(S.STREAM_CATALOG, S.STREAM_INDEXES),
    )

    def consumes(self) -> list[Consume]:
        spec = ConsumerSpec(
            S.STREAM_INGEST,
            "ingest",
            S.INGEST_REQUESTS,
            ack_wait=self.rt.settings.workers.ack_wait,
            description="ingest workers",
        )
        return [Consume(spec, self.handle)]

    async def setup(self) -> None:
        self.tmp = (self.rt.settings.data_dir / "tmp" / "ingest").resolve()
        self.tmp.mkdir(parents=True, exist_ok=True)

    async def publish_status(self, status: JobStatus, *, durable: bool = True) -> None:
        data = status.model_dump_json().encode()
        if durable:
            await self.rt.js.publish(S.job(status.job_id), data)
        else:
            await self.rt.nc.publish(S.job(status.job_id), data)

    async def handle(self, msg: Msg) -> None:
        try:
            req = IngestRequest.model_validate_json(msg.data)
        except ValidationError as exc:
            raise Permanent(f"invalid IngestRequest: {exc.errors(include_url=False)}") from None
        now = datetime.now(UTC)
        await self.publish_status(JobStatus(job_id=req.job_id, state="running", updated_at=now))
        work = self.tmp / req.job_id
        work.mkdir(parents=True, exist_ok=True)
        try:
            redelivered = (msg.metadata.num_delivered or 1) > 1
            result = await self.run(req, work, redelivered)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        await self.drop_source(req)
        done = JobStatus(
            job_id=req.job_id,
            state="succeeded",
            progress_rows=result.row_count,
            result=result,
            updated_at=datetime.now(UTC),
        )
        await self.publish_status(done)

    async def drop_source(self, req: IngestRequest) -> None:
        """``delete_source``: the staged upload goes once its job ends. Only a key under
        ``staging/`` is deleted: a request (from any publisher) cannot have a dataset's
        objects or anything else removed this way."""
        if not req.delete_source:
            return
        if not req.source_key.startswith(keys.STAGING):
            log.warning(
                "delete_source ignored outside staging/", extra={"source_key": req.source_key}
            )
            return
        if req.source_parts:
            await self.rt.storage.delete_prefix(req.source_key)
        else:
            await self.rt.storage.delete(req.source_key)

    async def run(self, req: IngestRequest, work: Path, redelivered: bool) -> IngestResult:
        storage = self.rt.storage
        follow: asyncio.Task[None] | None = None
        try:
            src: Path | Growing | None
            if req.source_parts:  # converted while it arrives; part 0 exists before the job
                first = await parts.local_part(storage, req.source_key, 0, work)
                if first is None:
                    raise NotFound(req.source_key)
                src = Growing()
                src.add(first)
                idle = self.rt.settings.ingest.upload_idle_timeout
                follow = asyncio.create_task(
                    parts.follow(storage, req.source_key, src, work, idle=idle, start=1)
                )
            elif (src := storage.local_path(req.source_key)) is None or not src.exists():
                src = work / "source.csv"
                await storage.get_file(req.source_key, src)
        except NotFound:
            # A redelivery of a job that registered and dropped its source, then failed
            # (e.g. its final status publish met a NATS leader election): it succeeded.
            before = await self.registered_before(req) if redelivered else None
            if before is None:
                raise Permanent(f"no CSV at storage key {req.source_key!r}", status=404) from None
            reply, key, _ = before
            entry = await catalog.event_at(self.rt.js, reply.catalog_seq)
            change = entry.change if entry and entry.change else ChangeSummary(mode=req.mode)
            return self.result(req, reply, change, key, [], 0, None)
        now = await catalog.last_event(self.rt.js, req.name)
        cur = now.event.manifest if now is not None else None
        out = work / "data.parquet"
        try:
            converted = await self.convert(req, src, out, hints(cur.columns) if cur else None)
        finally:
            if follow is not None:  # and a converter thread still reading stops too
                follow.cancel()
                assert isinstance(src, Growing)
                src.fail(RetryLater("the job stopped"))
        columns = [ColumnSpec.model_validate(vars(c)) for c in converted.columns]
        if req.embed is not None:
            check_template(req.embed, [c.name for c in converted.columns])
        if req.mode == "upsert":
            return await self.upsert(req, work, out, columns, redelivered, cur)
        obj = await catalog.store_object(
            storage, req.name, converted.fingerprint, out, converted.rows
        )
        register = RegisterRequest(
            request_id=req.job_id,
            name=req.name,
            schema_fingerprint=converted.fingerprint,
            columns=columns,
            objects=[obj],
            mode=req.mode,
            schema_rule=req.schema_rule,
        )
        reply, event = await self.register(register, [obj])
        batches, counts = 0, None
        if req.embed is not None:
            embed = req.embed
            spec = await autoembed.ensure_index(self.rt.js, self.rt.settings, req.name, embed)
            sent = await autoembed.publish(
                self.rt.js, spec, req.job_id, rendered(out, embed.text_template, embed.id_column)
            )
            name = texts.tag(reply.manifest.revision, req.job_id)
            await texts.record(self.rt.storage, spec.name, name, sent.ids, sent.shas, work)
            batches = sent.batches
            counts = EmbedCounts(texts_embedded=len(sent.ids), unchanged_skipped=0, deleted=0)
        return self.result(req, reply, event, obj.key, converted.widened, batches, counts)

    async def register(
        self, register: RegisterRequest, written: list[ObjectRef]
    ) -> tuple[RegisterReply, ChangeSummary]:
        """Register through the catalog worker. A refusal (400/409) deletes what this job
        wrote (content addressed, so no other registration can share it) and fails the job,
        except ``dataset changed`` (an upsert raced another change), which callers retry."""
        try:
            raw = await call(
                self.rt.nc,
                S.CATALOG_REGISTER,
                register,
                timeout=self.rt.settings.nats.request_timeout,
                what="catalog",
            )
        except LakehouseError as exc:
            if exc.error == "dataset changed":
                raise
            if exc.status in (400, 409):
                for obj in written:
                    await self.rt.storage.delete(obj.key)
                raise Permanent(str(exc.detail), status=exc.status, error=exc.error) from None
            raise RetryLater(str(exc)) from None
        reply = RegisterReply.model_validate_json(raw)
        entry = await catalog.event_at(self.rt.js, reply.catalog_seq)
        change = entry.change if entry and entry.change else ChangeSummary(mode=register.mode)
        return reply, change

    def result(
        self,
        req: IngestRequest,
        reply: RegisterReply,
        change: ChangeSummary,
        key: str,
        widened: list[str],
        batches: int,
        counts: EmbedCounts | None,
    ) -> IngestResult:
        m = reply.manifest
        return IngestResult(
            job_id=req.job_id,
            dataset_id=m.dataset_id,
            name=req.name,
            row_count=change.inserted + change.updated if req.mode == "upsert" else change.inserted,
            existing=reply.existing,
            fingerprint=m.schema_fingerprint,
            key=key,
            mode=req.mode,
            inserted=change.inserted,
            updated=change.updated,
            deleted=change.deleted,
            schema_change=change.schema_change,
            revision=m.revision,
            dataset_rows=m.row_count,
            widened=widened,
            catalog_seq=reply.catalog_seq,
            embed_index=req.embed.index if req.embed else None,
            embed_batches=batches,
            embed=counts,
        )

    async def upsert(
        self,
        req: IngestRequest,
        work: Path,
        upload: Path,
        columns: list[ColumnSpec],
        redelivered: bool,
        current: Manifest | None,
    ) -> IngestResult:
        """Diff the upload against the current revision by key, store the changed rows and a
        delete set, register on top of that revision (recomputed when the dataset changed
        meanwhile), then embed what changed. A redelivered job that already registered
        recomputes the same diff against the revision before its own and only republishes
        its embeds (deterministic batch ids: stored once). ``current``: the dataset as read
        before the conversion (the first attempt's base; a retry reads it again)."""
        assert req.key is not None
        spec = None
        if req.embed is not None:
            js, settings = self.rt.js, self.rt.settings
            spec = await autoembed.ensure_index(js, settings, req.name, req.embed)
        template = req.embed.text_template if req.embed else None
        reembed_all = spec is not None and (
            spec.text_template != template or spec.dataset != req.name
        )
        done = await self.registered_before(req) if redelivered else None
        for attempt in range(MAX_ATTEMPTS):
            if done is not None:
                base = done[2]
            elif attempt == 0:
                base = current
            else:
                entry = await catalog.last_event(self.rt.js, req.name)
                base = entry.event.manifest if entry is not None else None
            try:
                diff, out = await upserts.compute(
                    self.rt.storage,
                    base,
                    upload,
                    columns,
                    work,
                    key=req.key,
                    rule=req.schema_rule,
                    delete_missing=req.delete_missing,
                    template=template,
                    id_column=req.embed.id_column if req.embed else None,
                    reembed_all=reembed_all,
                )
            except (merge.KeyError400, duckdb.ConversionException) as exc:
                raise Permanent(str(exc), status=400, error="invalid upsert") from None
            except SchemaConflict as exc:
                raise Permanent(str(exc), status=409, error="schema fingerprint conflict") from None
            change = ChangeSummary(
                mode="upsert",
                inserted=diff.inserted,
                updated=diff.updated,
                deleted=diff.deleted,
                schema_change=diff.schema_change,
            )
            if done is not None:
                reply, key = done[0], done[1]
                break
            written, deletes = await upserts.store(self.rt.storage, req.name, diff, out)
            faults.point(self.rt.settings, "ingest.upsert.before_register")
            register = RegisterRequest(
                request_id=req.job_id,
                name=req.name,
                schema_fingerprint=fingerprint_of(diff.columns),
                columns=diff.columns,
                objects=written,
                mode="upsert",
                schema_rule=req.schema_rule,
                key=req.key,
                deletes=deletes,
                base_revision=base.revision if base else 0,
                change=change,
            )
            try:
                reply, change = await self.register(register, written + deletes)
            except LakehouseError:  # dataset changed: diff again against the new revision
                continue
            key = written[0].key if written else ""
            break
        else:
            raise RetryLater(f"dataset {req.name!r} kept changing during the upsert")
        batches, counts = 0, None
        if req.embed is not None and spec is not None:
            batches, counts = await self.embed_upsert(req, spec, out, diff, reply, work)
        return self.result(req, reply, change, key, [], batches, counts)

    async def embed_upsert(
        self,
        req: IngestRequest,
        spec: IndexSpec,
        out: Path,
        diff: merge.Diff,
        reply: RegisterReply,
        work: Path,
    ) -> tuple[int, EmbedCounts]:
        """Embed the rows of the new revision whose text the index does not have (by the
        hashes kept with it, :mod:`lakehouse.vectors.texts`); with no hashes kept yet (an
        index filled before they were), the rows the diff found new or changed in text. Then
        delete the removed keys and record what the index now holds."""
        assert req.embed is not None
        template, id_column = req.embed.text_template, req.embed.id_column
        revision = out / "revision.parquet"
        rows = pq.read_metadata(revision).num_rows
        known = await texts.recorded(self.rt.storage, spec.name, work)
        if known is None:
            candidates = rendered(out / "embed.parquet", template, id_column)
            sent = await autoembed.publish(self.rt.js, spec, req.job_id, candidates)
            held, held_shas = await asyncio.to_thread(
                autoembed.hashes, rendered(revision, template, id_column)
            )
        else:
            everything = rendered(revision, template, id_column)
            sent = await autoembed.publish(self.rt.js, spec, req.job_id, everything, known)
            held, held_shas, rows = sent.ids, sent.shas, sent.read
        await publish_deletes(self.rt.js, spec, diff.deleted_ids)
        gone: list[bytes | None] = [None] * len(diff.deleted_ids)
        await texts.record(
            self.rt.storage,
            spec.name,
            texts.tag(reply.manifest.revision, req.job_id),
            held + diff.deleted_ids,
            [*held_shas, *gone],
            work,
        )
        counts = EmbedCounts(
            texts_embedded=len(sent.ids),
            unchanged_skipped=rows - len(sent.ids),
            deleted=len(diff.deleted_ids),
        )
        return sent.batches, counts

    async def registered_before(
        self, req: IngestRequest
    ) -> tuple[RegisterReply, str, Manifest | None] | None:
        """When this job's upsert is already in the dataset's history: its reply, data object
        key, and the manifest it was computed on (None: the dataset was new)."""
        found = await catalog.registered_by(self.rt.nc, req.name, req.job_id)
        if found is None:
            return None
        entry, previous = found
        m = entry.event.manifest
        assert m is not None
        new = [o.key for o in m.objects if o.revision == m.revision]
        reply = RegisterReply(manifest=m, existing=previous is not None, catalog_seq=entry.seq)
        return reply, (new[0] if new else ""), previous

    async def convert(
        self, req: IngestRequest, src: Path | Growing, out: Path, types: dict[str, str] | None
    ) -> Converted:
        loop = asyncio.get_running_loop()
        last = [0.0]

        def progress(rows: int) -> None:  # called from the converter's thread
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY:
                last[0] = now
                status = JobStatus(
                    job_id=req.job_id,
                    state="running",
                    progress_rows=rows,
                    updated_at=datetime.now(UTC),
                )
                asyncio.run_coroutine_threadsafe(self.publish_status(status, durable=False), loop)

        try:
            return await asyncio.to_thread(
                convert,
                src,
                out,
                sample_rows=self.rt.settings.ingest.sample_rows,
                progress=progress,
                hints=types,
                max_columns=self.rt.settings.limits.max_csv_columns,
                max_cell_bytes=self.rt.settings.limits.max_cell_bytes,
            )
        except Exception as exc:
            failed = src.error if isinstance(src, Growing) else None
            if isinstance(failed, RetryLater):
                raise failed from None
            if failed is not None:  # pyarrow may have wrapped it
                raise Permanent(str(failed), status=400, error="upload failed") from None
            if isinstance(exc, CsvError):
                raise Permanent(str(exc), status=400, error="invalid CSV") from None
            raise

    async def dead_lettered(self, msg: Msg, failure: Permanent) -> None:
        try:
            req = IngestRequest.model_validate_json(msg.data)
        except ValidationError:
            # An invalid request (e.g. a bad dataset name) still fails its job, if it has one.
            job_id = JobStatus.job_id_of(msg.data)
            if job_id is None:
                return  # no job to report on
        else:
            job_id = req.job_id
            await self.drop_source(req)  # first: once the job reads failed, nothing is left
        status = JobStatus(
            job_id=job_id,
            state="failed",
            error=JobError(status=failure.status, error=failure.error, detail=failure.detail),
            updated_at=datetime.now(UTC),
        )
        await self.publish_status(status)
