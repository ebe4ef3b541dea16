"""Ingest worker: CSV in storage -> Parquet object -> catalog registration, reporting progress.

A job's CSV arrives by claim check (``source_key``). The Parquet object's key is content
addressed (``datasets/<name>/<fingerprint>/<sha256>.parquet``), so a redelivered job writes the
same key and the catalog's idempotency (request id = job id) makes the registration once.
Bad CSV fails the job at once (no retry) with a message naming the row/column; nothing is
registered and nothing it wrote is left in storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import string
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
from nats.aio.msg import Msg
from pydantic import ValidationError

from lakehouse.platform.bus import ConsumerSpec
from lakehouse.platform.errors import Conflict, LakehouseError, NotFound, Permanent, RetryLater
from lakehouse.platform.rpc import call
from lakehouse.platform.runtime import Consume, Worker
from lakehouse.platform.storage import keys
from lakehouse.tables.csv2parquet import Converted, CsvError, convert
from lakehouse.tables.rows import render
from lakehouse.vectors.embedding import model_dim
from lakehouse.vectors.indexes import create_index, get_index
from schemas import subjects as S
from schemas.catalog import ColumnSpec, ObjectRef, RegisterReply, RegisterRequest
from schemas.ingest import AutoEmbed, IngestRequest, IngestResult, JobError, JobStatus
from schemas.vectors import EmbedRequest, IndexSpec, TextItem

log = logging.getLogger("workers.ingest")

EMBED_BATCH = 256  # rows per EmbedRequest


def check_template(embed: AutoEmbed, columns: list[str]) -> None:
    fields = {f for _, f, _, _ in string.Formatter().parse(embed.text_template) if f}
    unknown = sorted(fields - set(columns))
    if unknown:
        raise Permanent(f"text_template names unknown column(s) {unknown}; columns: {columns}")
    if embed.id_column not in columns:
        raise Permanent(f"id_column {embed.id_column!r} is not a column; columns: {columns}")


PROGRESS_EVERY = 1.0  # seconds between progress updates


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class IngestWorker(Worker):
    kind = "ingest"

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
            result = await self.run(req, work)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        if req.delete_source:
            await self.rt.storage.delete(req.source_key)
        done = JobStatus(
            job_id=req.job_id,
            state="succeeded",
            progress_rows=result.row_count,
            result=result,
            updated_at=datetime.now(UTC),
        )
        await self.publish_status(done)

    async def run(self, req: IngestRequest, work: Path) -> IngestResult:
        storage = self.rt.storage
        src = storage.local_path(req.source_key)
        try:
            if src is None or not src.exists():
                src = work / "source.csv"
                await storage.get_file(req.source_key, src)
        except NotFound:
            raise Permanent(f"no CSV at storage key {req.source_key!r}", status=404) from None
        out = work / "data.parquet"
        converted = await self.convert(req, src, out)
        if req.embed is not None:
            check_template(req.embed, [c.name for c in converted.columns])
        digest = await asyncio.to_thread(sha256_file, out)
        key = keys.data_object(req.name, converted.fingerprint, digest[:32])
        await storage.put_file(key, out)
        register = RegisterRequest(
            request_id=req.job_id,
            name=req.name,
            schema_fingerprint=converted.fingerprint,
            columns=[ColumnSpec.model_validate(vars(c)) for c in converted.columns],
            objects=[ObjectRef(key=key, size=converted.size, rows=converted.rows)],
            mode=req.mode,
        )
        try:
            raw = await call(
                self.rt.nc,
                S.CATALOG_REGISTER,
                register,
                timeout=self.rt.settings.nats.request_timeout,
                what="catalog",
            )
        except LakehouseError as exc:
            if exc.status in (400, 409):
                await storage.delete(key)  # content addressed under its own fingerprint
                raise Permanent(str(exc.detail), status=exc.status, error=exc.error) from None
            raise RetryLater(str(exc)) from None
        reply = RegisterReply.model_validate_json(raw)
        batches = 0
        if req.embed is not None:
            batches = await self.publish_embeds(req, req.embed, out)
        return IngestResult(
            job_id=req.job_id,
            dataset_id=reply.manifest.dataset_id,
            name=req.name,
            row_count=converted.rows,
            existing=reply.existing,
            fingerprint=converted.fingerprint,
            key=key,
            mode=req.mode,
            revision=reply.manifest.revision,
            dataset_rows=reply.manifest.row_count,
            widened=converted.widened,
            catalog_seq=reply.catalog_seq,
            embed_index=req.embed.index if req.embed else None,
            embed_batches=batches,
        )

    async def publish_embeds(self, req: IngestRequest, embed: AutoEmbed, parquet: Path) -> int:
        """One EmbedRequest per EMBED_BATCH rows, with deterministic batch ids: a redelivered
        job republishes the same ids, which JetStream stores once."""
        js = self.rt.js
        if await get_index(js, embed.index) is None:
            spec = IndexSpec(
                name=embed.index,
                dim=model_dim(self.rt.settings),
                dataset=req.name,
                id_column=embed.id_column,
                text_template=embed.text_template,
            )
            with contextlib.suppress(Conflict):
                await create_index(js, spec)
        acks = []
        reader = pq.ParquetFile(parquet)
        n = 0
        for batch in reader.iter_batches(batch_size=EMBED_BATCH):
            items = [
                TextItem(id=str(row[embed.id_column]), text=render(embed.text_template, row))
                for row in batch.to_pylist()
            ]
            er = EmbedRequest(
                batch_id=f"{req.job_id}-{n}", index=embed.index, items=items, job_id=req.job_id
            )
            acks.append(
                await js.publish_async(
                    S.embed_requests(embed.index),
                    er.model_dump_json().encode(),
                    headers={"Nats-Msg-Id": er.batch_id},
                )
            )
            n += 1
        await asyncio.gather(*acks)
        return n

    async def convert(self, req: IngestRequest, src: Path, out: Path) -> Converted:
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
            )
        except CsvError as exc:
            raise Permanent(str(exc), status=400, error="invalid CSV") from None

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
            if req.delete_source:
                await self.rt.storage.delete(req.source_key)
        status = JobStatus(
            job_id=job_id,
            state="failed",
            error=JobError(status=failure.status, error=failure.error, detail=failure.detail),
            updated_at=datetime.now(UTC),
        )
        await self.publish_status(status)
