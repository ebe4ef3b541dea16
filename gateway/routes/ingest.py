"""``POST /v1/ingest`` (stream the CSV to storage, publish an IngestRequest as soon as the job
can start: a large upload is converted while it arrives; wait for the job),
``GET /v1/jobs`` and ``GET /v1/jobs/{id}``."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError
from pydantic import BaseModel, Field

from gateway import errors
from gateway.routes import JsonRoute, state
from gateway.uploads import JobEnded, Staged, refuse_oversize, stage, upload_body
from lakehouse.platform import streams
from lakehouse.platform.errors import BadRequest, LakehouseError, NotFound
from schemas import subjects as S
from schemas.catalog import Mode, SchemaRule
from schemas.ingest import AutoEmbed, IngestRequest, IngestResult, JobId, JobStatus

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(tags=["ingest"], route_class=JsonRoute)


class Accepted(BaseModel):
    """Ingest's answer when the job is still running after ``wait`` seconds."""

    job_id: str = Field(description="The job.", examples=["5b1e0c8a9f2d4c7e8a1b2c3d4e5f6a7b"])
    state: Literal["queued", "running"] = Field(description="Its state so far.")
    status_url: str = Field(description="Where to poll it.", examples=["/v1/jobs/5b1e0c8a"])


class EmbedProgress(BaseModel):
    index: str = Field(description="Index the rows are embedded into.", examples=["workers"])
    batches: int = Field(description="Embed requests published.", examples=[8])
    batches_done: int = Field(description="Embed requests finished so far.", examples=[3])


class JobView(JobStatus):
    embed: EmbedProgress | None = Field(
        None, description="Auto-embed progress, once the job succeeded with `embed_index`."
    )


CSV_BODY = {
    "required": True,
    "description": "The CSV: a raw body, or the `file` part of a multipart form. Its content "
    "rules (a header of unique, non-empty names, equal-length rows, UTF-8) are checked by the "
    "ingest job: a breach is a 400 naming the row/column.",
    "content": {
        "text/csv": {"schema": {"type": "string", "minLength": 1}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
    },
}


class JobWatch:
    """A job's status updates as they are published: the latest, and whether it ended."""

    def __init__(self, status: JobStatus) -> None:
        self.status = status
        self.ended = asyncio.Event()
        self.sub: Subscription | None = None

    async def subscribe(self, nc: NATS) -> None:
        self.sub = await nc.subscribe(S.job(self.status.job_id), cb=self.update)

    async def update(self, msg: Msg) -> None:
        self.status = JobStatus.model_validate_json(msg.data)
        if self.status.done:
            self.ended.set()

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()


DOC = {n: f.description or "" for n, f in IngestRequest.model_fields.items()}
"""The contract's field descriptions, reused for the query parameters of the same name."""


def job_failed(status: JobStatus) -> LakehouseError:
    assert status.error is not None
    exc = LakehouseError(status.error.detail, error=status.error.error)
    exc.status = status.error.status
    return exc


@router.post(
    "/v1/ingest",
    summary="Upload a CSV (multipart 'file' or raw text/csv body) and register it as a dataset",
    openapi_extra={"requestBody": CSV_BODY},
    responses={
        200: {"model": IngestResult, "description": "Ingested: the job's result."},
        202: {"model": Accepted, "description": "Still running after `wait` seconds."},
        **errors.responses(
            400,
            404,
            409,
            413,
            503,
            _400="Empty upload, invalid parameters, or bad CSV (naming the row/column); "
            "auto-embed parameters given without the other two; an upsert's key column missing, "
            "empty or duplicated (naming the keys and data rows).",
            _404="The staged upload vanished before the job read it.",
            _409="Columns that differ from the dataset's beyond what `schema` allows.",
            _413="Upload over `ingest.max_upload_bytes`; nothing was kept.",
            _500="The job gave up after retries (the dead letter has the error).",
        ),
    },
)
async def ingest(
    request: Request,
    name: Annotated[S.Name, Query(description="Dataset name.", examples=["workers"])],
    mode: Mode = Query("replace", description="replace (default), append or upsert"),
    key_column: str | None = Query(
        None, alias="key", min_length=1, description=DOC["key"], examples=["worker_id"]
    ),
    delete_missing: bool = Query(False, description=DOC["delete_missing"]),
    schema: SchemaRule = Query("strict", description=DOC["schema_rule"]),
    wait: float | None = Query(None, ge=0, le=3600, description="Seconds to wait (default 120)"),
    embed_index: Annotated[
        S.Name | None,
        Query(description="Also embed every row into this index (with the two below)."),
    ] = None,
    id_column: str | None = Query(
        None, min_length=1, description="Column with each row's item id (auto-embed)."
    ),
    text_template: str | None = Query(
        None,
        min_length=1,
        description="Format string over the columns, e.g. '{role} in {city}' (auto-embed).",
    ),
    st: State = Depends(state),
) -> Response:
    embed = None
    if embed_index is not None or id_column is not None or text_template is not None:
        if embed_index is None or id_column is None or text_template is None:
            raise BadRequest("auto-embed needs embed_index, id_column and text_template together")
        embed = AutoEmbed(index=embed_index, id_column=id_column, text_template=text_template)
    if mode == "upsert" and key_column is None:
        raise BadRequest("mode=upsert needs key (the key column)")
    if mode != "upsert" and (key_column is not None or delete_missing):
        raise BadRequest("key and delete_missing apply to mode=upsert only")
    nc = st.require_nats()
    cap = st.settings.ingest.max_upload_bytes
    refuse_oversize(request, cap, "ingest limit")
    job_id = uuid.uuid4().hex
    js = nc.jetstream()
    watch = JobWatch(JobStatus(job_id=job_id, state="queued", updated_at=datetime.now(UTC)))

    async def start(staged: Staged) -> None:
        if not staged.parts and staged.size == 0:  # no job: the schema says minLength 1
            await st.storage.delete(staged.key)
            raise BadRequest("the file is empty", error="invalid CSV")
        await watch.subscribe(nc)  # before publishing: no update can be missed
        req = IngestRequest(
            job_id=job_id,
            name=name,
            source_key=staged.key,
            source_parts=staged.parts,
            mode=mode,
            key=key_column,
            delete_missing=delete_missing,
            schema_rule=schema,
            delete_source=True,
            embed=embed,
        )
        try:
            await js.publish(S.job(job_id), watch.status.model_dump_json().encode())
            await js.publish(
                S.INGEST_REQUESTS, req.model_dump_json().encode(), headers={"Nats-Msg-Id": job_id}
            )
        except Exception:
            if not staged.parts:  # parts are deleted by stage()
                await st.storage.delete(staged.key)
            raise

    try:
        await stage(
            st.storage,
            job_id,
            upload_body(request),
            cap=cap,
            part_bytes=st.settings.ingest.part_bytes,
            start=start,
            ended=watch.ended,
        )
        timeout = st.settings.ingest.wait if wait is None else wait
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.ended.wait(), timeout)
    except JobEnded:
        pass  # it failed while the upload was arriving: answer with its error now
    finally:
        await watch.close()
    status = watch.status
    if status.state == "succeeded" and status.result is not None:
        st.saw_catalog_seq(status.result.catalog_seq)
        return Response(status.result.model_dump_json(), media_type="application/json")
    if status.state == "failed":
        raise job_failed(status)
    body = {"job_id": job_id, "state": status.state, "status_url": f"/v1/jobs/{job_id}"}
    return JSONResponse(body, status_code=202)


class JobList(BaseModel):
    jobs: list[JobStatus] = Field(description="Newest first (by last update).")


@router.get(
    "/v1/jobs",
    summary="Recent jobs, newest first",
    responses={
        200: {"model": JobList, "description": "Each job's latest status."},
        **errors.responses(400, 503),
    },
)
async def jobs(
    limit: int = Query(20, ge=1, le=1000, description="Jobs to list."),
    st: State = Depends(state),
) -> JSONResponse:
    """Every job still kept (the jobs stream keeps 7 days), newest first."""
    records = await streams.last_per_subject(st.require_nats(), S.STREAM_JOBS, S.job("*"))
    found = [JobStatus.model_validate_json(r.data) for r in records]
    found.sort(key=lambda j: j.updated_at, reverse=True)
    return JSONResponse({"jobs": [j.model_dump(mode="json") for j in found[:limit]]})


@router.get(
    "/v1/jobs/{job_id}",
    summary="A job's state, progress, result or error",
    responses={
        200: {"model": JobView, "description": "The job's latest status."},
        **errors.responses(400, 404, 503),
    },
)
async def job(
    job_id: Annotated[JobId, Path(description="The job id.")], st: State = Depends(state)
) -> Response:
    js = st.require_nats().jetstream()
    try:
        msg = await js.get_last_msg(S.STREAM_JOBS, S.job(job_id))
    except NotFoundError:
        raise NotFound(f"no job {job_id!r}") from None
    status = JobStatus.model_validate_json(msg.data or b"{}")
    body = status.model_dump(mode="json")
    if status.state == "succeeded" and status.result is not None:
        st.saw_catalog_seq(status.result.catalog_seq)
        if status.result.embed_index:
            info = await js.stream_info(S.STREAM_JOBS, subjects_filter=f"{S.job(job_id)}.embed.>")
            body["embed"] = {
                "index": status.result.embed_index,
                "batches": status.result.embed_batches,
                "batches_done": len(info.state.subjects or {}),
            }
    return JSONResponse(body)
