"""The Datasets pages: the list (``/datasets``), a dataset's schema and revisions with the
form that updates it (``/datasets/{name}``, posting to ``/datasets/{name}/upload``: the job's
fragment to htmx, a redirect to ``/datasets/{name}?job=ID`` for a plain submit) and a job's
progress fragment (``/jobs/{id}``). Shared page helpers come from :mod:`gateway.web.pages`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from gateway.routes import catalog as catalog_routes
from gateway.routes import ingest as ingest_routes
from gateway.routes import state
from gateway.uploads import refuse_oversize
from gateway.web import forms
from gateway.web.pages import body_of, failure, manifest_of, page, wants_part
from lakehouse.client.render import finished
from lakehouse.platform.errors import BadRequest, LakehouseError
from lakehouse.vectors.indexes import list_indexes
from schemas import subjects as S
from schemas.ingest import JOB_ID
from schemas.vectors import IndexSpec

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(include_in_schema=False)


@router.get("/datasets", response_class=HTMLResponse)
async def datasets(request: Request, st: State = Depends(state)) -> HTMLResponse:
    listing = body_of(await catalog_routes.list_datasets(request, st))
    specs = await list_indexes(st.require_nats().jetstream())
    embedded = {s.dataset: s.name for s in specs if s.dataset}
    ctx = {"datasets": listing["datasets"], "embedded": embedded}
    return page(request, "datasets.html", ctx)


async def linked_indexes(st: State, name: str) -> list[IndexSpec]:
    """The indexes made from dataset ``name`` that an upload can keep in step (auto-embed)."""
    specs = await list_indexes(st.require_nats().jetstream())
    return [s for s in specs if s.dataset == name and s.id_column and s.text_template]


@router.get("/datasets/{name}", response_class=HTMLResponse)
async def dataset(
    request: Request, name: S.Name, job: str | None = None, st: State = Depends(state)
) -> HTMLResponse:
    """A dataset's schema and revisions (each with what it changed), and a form to update it
    (replace, append or upsert by key); ``job``: that upload's progress."""
    ctx: dict[str, Any] = {}
    if job:
        ctx["job"] = await job_context(st, job)
    return await dataset_page(request, name, st, ctx)


async def dataset_page(
    request: Request, name: str, st: State, ctx: dict[str, Any], status: int = 200
) -> HTMLResponse:
    try:
        m = await manifest_of(st, name)
    except LakehouseError as exc:
        return page(request, "error.html", {"error": failure(exc)}, status=404)
    history = body_of(await catalog_routes.history(name, st))
    indexes = await linked_indexes(st, name)
    ctx = {"m": m, "events": history["events"][::-1], "indexes": indexes, **ctx}
    ctx.setdefault("key", m.get("key") or next((s.id_column for s in indexes), None))
    return page(request, "dataset.html", ctx, status=status)


@router.post("/datasets/{name}/upload", response_class=HTMLResponse)
async def upload(request: Request, name: S.Name, st: State = Depends(state)) -> Response:
    """The dataset page's upload form (multipart: the options, then ``file``) through
    ``POST /v1/ingest``. Starlette parses the form (the file spooled to a temporary file
    past 1 MiB), then the file streams to the ingest route as its body. htmx gets the job's
    fragment (it follows the job itself); a plain submit waits for the job
    (``ingest.wait``) and is redirected to the dataset page showing it."""
    part = wants_part(request)
    form: FormData | None = None
    try:
        refuse_oversize(request, st.settings.ingest.max_upload_bytes, "ingest limit")
        m = await manifest_of(st, name)
        indexes = {s.name: s for s in await linked_indexes(st, name)}
        form = await request.form(max_files=1, max_fields=16)
        options = forms.upload_options(form, [c["name"] for c in m["columns"]], list(indexes))
        file = form.get("file")
        if not isinstance(file, UploadFile) or not file.filename:
            raise BadRequest("choose a CSV file to upload")
        spec = indexes.get(options.embed_index or "")
        answer = await ingest_routes.ingest(
            file_body(request, file),
            name=name,
            mode=options.mode,
            key_column=options.key,
            delete_missing=options.delete_missing,
            schema=options.schema,
            wait=0 if part else None,
            embed_index=spec.name if spec else None,
            id_column=spec.id_column if spec else None,
            text_template=spec.text_template if spec else None,
            st=st,
        )
    except LakehouseError as exc:
        error = {"job_id": "", "error": failure(exc)}
        if part:  # 200: htmx swaps only a successful answer in
            return page(request, "_job.html", error)
        return await dataset_page(request, name, st, {"job": error}, status=exc.status)
    finally:
        if form is not None:
            await form.close()
    job_id = str(body_of(answer)["job_id"])
    if part:
        return page(request, "_job.html", await job_context(st, job_id))
    return RedirectResponse(f"/datasets/{name}?{urlencode({'job': job_id})}", status_code=303)


def file_body(request: Request, file: UploadFile) -> Request:
    """A request like ``request`` whose body is ``file`` alone, as ``text/csv``."""

    async def receive() -> dict[str, Any]:
        chunk = await file.read(1 << 20)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}

    size = str(file.size or 0).encode()
    headers = [
        (k, v) for k, v in request.scope["headers"] if k not in (b"content-type", b"content-length")
    ]
    headers += [(b"content-type", b"text/csv"), (b"content-length", size)]
    return Request({**request.scope, "headers": headers}, receive)


async def job_context(st: State, job_id: str) -> dict[str, Any]:
    """What ``_job.html`` shows of a job."""
    try:
        JOB_ID.validate_python(job_id)
    except ValidationError:
        return {"job_id": job_id, "error": f"not found: no job {job_id!r}"}
    try:
        status = body_of(await ingest_routes.job(job_id, st))
    except LakehouseError as exc:
        return {"job_id": job_id, "error": failure(exc)}
    embed = status.get("embed")
    result = status.get("result") or {}
    done = finished(status)
    ctx = {"job_id": job_id, "s": status, "embed": embed, "result": result, "done": done}
    if done and status["state"] == "succeeded" and result.get("embed_index"):
        ctx["search_url"] = "/?" + urlencode({"index": result["embed_index"]})
    return ctx


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job(request: Request, job_id: str, st: State = Depends(state)) -> HTMLResponse:
    """A job's progress as a fragment that reloads itself until the data is searchable."""
    return page(request, "_job.html", await job_context(st, job_id))
