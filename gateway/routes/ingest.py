"""``POST /v1/ingest`` (stream the CSV to storage, publish an IngestRequest, wait for the job)
and ``GET /v1/jobs/{id}``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import nats.errors
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from nats.js.errors import NotFoundError

from gateway.routes import state
from gateway.uploads import upload_body
from lakehouse.platform.errors import BadRequest, LakehouseError, NotFound, TooLarge
from lakehouse.platform.storage import keys
from schemas import subjects as S
from schemas.catalog import Mode
from schemas.ingest import AutoEmbed, IngestRequest, JobStatus

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(tags=["ingest"])


def job_failed(status: JobStatus) -> LakehouseError:
    assert status.error is not None
    exc = LakehouseError(status.error.detail, error=status.error.error)
    exc.status = status.error.status
    return exc


@router.post(
    "/v1/ingest",
    summary="Upload a CSV (multipart 'file' or raw text/csv body) and register it as a dataset",
    responses={
        200: {"description": "Ingested: the result (dataset_id, row_count, existing, ...)."},
        202: {"description": "Still running after `wait` seconds: poll /v1/jobs/{job_id}."},
        400: {"description": "Bad CSV or name, naming the row/column."},
        409: {"description": "Schema fingerprint differs from the registered dataset."},
        413: {"description": "Upload over the configured cap."},
    },
)
async def ingest(
    request: Request,
    name: str = Query(description="Dataset name [A-Za-z0-9_-]{1,128}", examples=["workers"]),
    mode: Mode = Query("replace", description="replace (default) or append"),
    wait: float | None = Query(None, ge=0, le=3600, description="Seconds to wait (default 120)"),
    embed_index: str | None = Query(None, description="Also embed every row into this index"),
    id_column: str | None = Query(None, description="Column with each row's item id"),
    text_template: str | None = Query(
        None, description="Format string over the columns, e.g. '{role} in {city}'"
    ),
    st: State = Depends(state),
) -> Response:
    if not S.valid_name(name):
        raise BadRequest(f"invalid dataset name {name!r}: use 1-128 of [A-Za-z0-9_-]")
    embed = None
    if embed_index or id_column or text_template:
        if not (embed_index and id_column and text_template):
            raise BadRequest("auto-embed needs embed_index, id_column and text_template together")
        if not S.valid_name(embed_index):
            raise BadRequest(f"invalid index name {embed_index!r}: use 1-128 of [A-Za-z0-9_-]")
        embed = AutoEmbed(index=embed_index, id_column=id_column, text_template=text_template)
    nc = st.require_nats()
    cap = st.settings.ingest.max_upload_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise TooLarge(f"Content-Length {length} exceeds the {cap}-byte ingest limit")
    job_id = uuid.uuid4().hex
    key = keys.staged_csv(job_id)
    # Staged CSVs are transient (deleted once converted): no fsync on the upload path.
    await st.storage.put(key, upload_body(request), max_bytes=cap, sync=False)
    js = nc.jetstream()
    updates = await nc.subscribe(S.job(job_id))  # before publishing: no update can be missed
    try:
        queued = JobStatus(job_id=job_id, state="queued", updated_at=datetime.now(UTC))
        await js.publish(S.job(job_id), queued.model_dump_json().encode())
        req = IngestRequest(
            job_id=job_id,
            name=name,
            source_key=key,
            mode=mode,
            delete_source=True,
            embed=embed,
        )
        await js.publish(
            S.INGEST_REQUESTS, req.model_dump_json().encode(), headers={"Nats-Msg-Id": job_id}
        )
    except Exception:
        await updates.unsubscribe()
        await st.storage.delete(key)
        raise
    status = queued
    try:
        deadline = asyncio.get_running_loop().time() + (
            st.settings.ingest.wait if wait is None else wait
        )
        while not status.done:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                msg = await updates.next_msg(timeout=left)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            status = JobStatus.model_validate_json(msg.data)
    finally:
        await updates.unsubscribe()
    if status.state == "succeeded" and status.result is not None:
        st.saw_catalog_seq(status.result.catalog_seq)
        return Response(status.result.model_dump_json(), media_type="application/json")
    if status.state == "failed":
        raise job_failed(status)
    body = {"job_id": job_id, "state": status.state, "status_url": f"/v1/jobs/{job_id}"}
    return JSONResponse(body, status_code=202)


@router.get("/v1/jobs/{job_id}", summary="A job's state, progress, result or error")
async def job(job_id: str, st: State = Depends(state)) -> Response:
    if not S.valid_name(job_id):
        raise BadRequest(f"invalid job id {job_id!r}")
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
