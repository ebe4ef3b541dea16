"""The pages: Find workers (``/``), Datasets, SQL, Status. Each route renders its whole page,
or only the part that changes when htmx asks for it (``HX-Request``), so a URL is a
bookmark and a plain form submit works too (the dataset page's upload form included: it
posts to ``/datasets/{name}/upload``, which answers the job's fragment to htmx and redirects
a plain submit to ``/datasets/{name}?job=ID``)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import FormData, UploadFile

from gateway.routes import catalog as catalog_routes
from gateway.routes import health as health_routes
from gateway.routes import ingest as ingest_routes
from gateway.routes import search as search_routes
from gateway.routes import state
from gateway.routes.sql import run_sql
from gateway.routes.vectors import index_stats
from gateway.web import forms
from lakehouse import __version__
from lakehouse.client import render
from lakehouse.client.http import finished
from lakehouse.platform.bus import STREAMS
from lakehouse.platform.errors import BadRequest, LakehouseError, TooLarge
from lakehouse.tables.views import DUCK_TYPES, ident
from lakehouse.vectors.indexes import list_indexes
from schemas import subjects as S
from schemas.ingest import JobId
from schemas.vectors import IndexSpec

if TYPE_CHECKING:
    from gateway.app import State

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["version"] = __version__
templates.env.filters["when"] = render.when
templates.env.filters["counts"] = forms.counts
templates.env.filters["columns_changed"] = forms.columns_changed
router = APIRouter(include_in_schema=False)

PAGE = 10
MAX_K = 1000

Controls = tuple[list[forms.Control], list[tuple[str, str]]]
_controls: dict[tuple[str, int], Controls] = {}  # (dataset, revision) -> its filter controls


def wants_part(request: Request) -> bool:
    """htmx asking for the changing part (a history restore needs the whole page)."""
    h = request.headers
    return h.get("hx-request") == "true" and h.get("hx-history-restore-request") != "true"


def page(request: Request, name: str, ctx: dict[str, Any], status: int = 200) -> HTMLResponse:
    """The template rendered; gzipped when the browser takes it (a results page with its rows
    is ~33 KB, ~8 KB compressed)."""
    out = templates.TemplateResponse(request, name, ctx, status_code=status)
    if len(out.body) > 1024 and "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(bytes(out.body), compresslevel=5)
        headers = {"content-encoding": "gzip", "vary": "Accept-Encoding"}
        return HTMLResponse(body, status_code=status, headers=headers)
    return out


def failure(exc: LakehouseError) -> str:
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return f"{exc.error}: {detail}" if detail and detail != "null" else str(exc.error)


def body_of(response: Response) -> Any:
    """The JSON body of a response from one of the JSON routes' functions."""
    return json.loads(bytes(response.body))


async def sql_json(st: State, sql: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(await run_sql(st, sql))
    return out


async def manifest_of(st: State, name: str) -> dict[str, Any]:
    out: dict[str, Any] = body_of(await catalog_routes.manifest(name, st))
    return out


async def controls_for(st: State, m: dict[str, Any], skip: set[str]) -> Controls:
    """The dataset's filter controls, measured once per revision."""
    key = (m["name"], m["revision"])
    if key not in _controls:
        columns = [(c["name"], DUCK_TYPES[c["type"]]) for c in m["columns"]]
        stats = (await sql_json(st, forms.controls_sql(m["name"], columns, skip)))["rows"][0]
        controls, listed = forms.plan_controls(columns, skip, stats)
        for c in controls:
            if c.column in listed:
                sql = (
                    f"SELECT DISTINCT {ident(c.column)} FROM {ident(m['name'])} "
                    f"WHERE {ident(c.column)} IS NOT NULL ORDER BY 1"
                )
                c.choices = [str(r[0]) for r in (await sql_json(st, sql))["rows"]]
        for old in [k for k in _controls if k[0] == m["name"]]:
            del _controls[old]
        _controls[key] = (controls, columns)
    return _controls[key]


# ---- Find workers ---------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
async def find(
    request: Request,
    index: str | None = None,
    q: str = "",
    like: str = "",
    where: str = "",
    page_no: Annotated[int, Query(alias="page", ge=1, le=MAX_K // PAGE)] = 1,
    st: State = Depends(state),
) -> HTMLResponse:
    specs = [s for s in await list_indexes(st.require_nats().jetstream()) if s.dataset]
    ctx: dict[str, Any] = {
        "specs": specs,
        "q": q,
        "like": like,
        "where": where,
        "params": request.query_params,
        "cards": None,
        "error": None,
    }
    spec = pick(specs, index)
    if spec is None:
        return page(request, "find.html", ctx)
    assert spec.dataset and spec.id_column
    ctx["spec"] = spec
    try:
        m = await manifest_of(st, spec.dataset)
        controls, columns = await controls_for(st, m, {spec.id_column})
        ctx["controls"] = controls
        predicate = forms.predicate(controls, request.query_params)
        if where.strip():
            predicate = f"({where})" + (f" AND {predicate}" if predicate else "")
        names = [n for n, _ in columns]
        if q.strip() or like:
            ctx.update(await hits(st, spec, q, like, predicate, names, page_no))
        else:
            ctx.update(await browse(st, spec, predicate, names, page_no))
    except LakehouseError as exc:
        ctx["error"] = failure(exc)
    ctx["page_no"] = page_no
    ctx["page_url"] = lambda n: (
        "/?"
        + urlencode(
            [(k, v) for k, v in request.query_params.multi_items() if k != "page"] + [("page", n)]
        )
    )
    return page(request, "_results.html" if wants_part(request) else "find.html", ctx)


def pick(specs: list[IndexSpec], wanted: str | None) -> IndexSpec | None:
    by_name = {s.name: s for s in specs}
    if wanted in by_name:
        return by_name[wanted]
    return by_name.get("workers") or (specs[0] if specs else None)


async def hits(
    st: State,
    spec: IndexSpec,
    q: str,
    like: str,
    predicate: str | None,
    names: list[str],
    page_no: int,
) -> dict[str, Any]:
    k = min(MAX_K, page_no * PAGE + 1)  # one more: is there a next page?
    common = {"k": k, "filter": predicate, "fields": names}
    body: search_routes.TextQuery | search_routes.LikeQuery = (
        search_routes.LikeQuery(like=like, **common)
        if like
        else search_routes.TextQuery(text=q, **common)
    )
    answer = body_of(await search_routes.search(spec.name, body, st))
    found = answer["hits"]
    cards = []
    for h in found[(page_no - 1) * PAGE : page_no * PAGE]:
        if h.get("row") is None:
            continue  # indexed, but its row is gone (the dataset changed since)
        c = forms.card(h["id"], h["row"], names)
        c.score = render.match(h, spec.metric)
        if h.get("snippet"):
            c.snippet = forms.segments(h["snippet"]["text"], h["snippet"]["marks"])
            c.snippet_column = h["snippet"]["column"]
        cards.append(c)
    return {
        "cards": cards,
        "has_next": len(found) > page_no * PAGE,
        "took_ms": answer["took_ms"],
        "matches": answer["filter_matches"],
        "partial": answer["partial"],
    }


async def browse(
    st: State, spec: IndexSpec, predicate: str | None, names: list[str], page_no: int
) -> dict[str, Any]:
    """No search text: the rows the filters keep, in id order."""
    assert spec.dataset and spec.id_column
    sql = f"SELECT * FROM {ident(spec.dataset)}"
    if predicate:
        sql += f" WHERE {predicate}"
    sql += f" ORDER BY {ident(spec.id_column)} LIMIT {PAGE + 1} OFFSET {(page_no - 1) * PAGE}"
    out = await sql_json(st, sql)
    cols = [c["name"] for c in out["columns"]]
    rows = [dict(zip(cols, r, strict=True)) for r in out["rows"]]
    cards = [forms.card(str(r[spec.id_column]), r, names) for r in rows[:PAGE]]
    return {"cards": cards, "has_next": len(rows) > PAGE, "took_ms": None, "matches": None}


# ---- Datasets ---------------------------------------------------------------------------
@router.get("/datasets", response_class=HTMLResponse)
async def datasets(request: Request, st: State = Depends(state)) -> HTMLResponse:
    listing = body_of(await catalog_routes.list_datasets(st))
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
        cap = st.settings.ingest.max_upload_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise TooLarge(f"Content-Length {length} exceeds the {cap}-byte ingest limit")
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


JOB_ID: TypeAdapter[str] = TypeAdapter(JobId)


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


# ---- SQL ----------------------------------------------------------------------------------
@router.get("/sql", response_class=HTMLResponse)
async def sql_page(request: Request, q: str = "", st: State = Depends(state)) -> HTMLResponse:
    ctx: dict[str, Any] = {"q": q, "result": None, "error": None}
    if q.strip():
        try:
            ctx["result"] = await sql_json(st, q)
        except LakehouseError as exc:
            ctx["error"] = failure(exc)
        ctx["download"] = urlencode({"q": q})
    return page(request, "_sql_result.html" if wants_part(request) else "sql.html", ctx)


@router.get("/sql/result.{fmt}")
async def sql_download(q: str, fmt: str, st: State = Depends(state)) -> Response:
    """The result as CSV or Parquet (Arrow from the query worker, converted here)."""
    if fmt not in ("csv", "parquet"):
        return Response("csv or parquet", status_code=404)
    table = pa.ipc.open_stream(pa.BufferReader(await run_sql(st, q, arrow=True))).read_all()
    table = table.replace_schema_metadata(None)
    sink = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(table, sink)
        media = "text/csv"
    else:
        pq.write_table(table, sink, compression="zstd")
        media = "application/vnd.apache.parquet"
    headers = {"content-disposition": f'attachment; filename="result.{fmt}"'}
    return Response(sink.getvalue(), media_type=media, headers=headers)


# ---- Status ------------------------------------------------------------------------------
@router.get("/status", response_class=HTMLResponse)
async def status(request: Request, st: State = Depends(state)) -> HTMLResponse:
    health = body_of(await health_routes.health(st))
    js = st.require_nats().jetstream()
    consumers = []
    for spec in STREAMS:
        try:
            infos = await js.consumers_info(spec.name)
        except Exception:  # a stream not provisioned yet
            continue
        for info in infos:
            if info.config.durable_name:
                consumers.append(
                    {
                        "stream": spec.name,
                        "name": info.name,
                        "pending": info.num_pending or 0,
                        "in_flight": info.num_ack_pending or 0,
                        "redelivered": info.num_redelivered or 0,
                    }
                )
    try:
        dlq = await js.stream_info(S.STREAM_DLQ, subjects_filter=S.all_under(S.DLQ_PREFIX))
        letters = {s.rsplit(".", 1)[1]: n for s, n in (dlq.state.subjects or {}).items()}
    except Exception:
        letters = {}
    indexes = []
    for spec_ in await list_indexes(js):
        try:
            indexes.append(await index_stats(spec_.name, st))
        except LakehouseError:
            continue
    ctx = {"health": health, "consumers": consumers, "letters": letters, "indexes": indexes}
    return page(request, "status.html", ctx)
