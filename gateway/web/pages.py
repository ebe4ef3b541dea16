"""The pages: Find workers (``/``), SQL, Status, and what every page shares (templates, the
whole-page-or-fragment answer, errors); the Datasets pages are in :mod:`gateway.web.datasets`.
Each route renders its whole page, or only the part that changes when htmx asks for it
(``HX-Request``), so a URL is a bookmark and a plain form submit works too."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from gateway import auth
from gateway.routes import catalog as catalog_routes
from gateway.routes import health as health_routes
from gateway.routes import search as search_routes
from gateway.routes import state
from gateway.routes.sql import run_sql
from gateway.routes.vectors import index_stats
from gateway.web import forms
from lakehouse import __version__
from lakehouse.client import render
from lakehouse.platform import lazy
from lakehouse.platform.bus import STREAMS
from lakehouse.platform.errors import LakehouseError
from lakehouse.tables.views import DUCK_TYPES, ident
from lakehouse.vectors.indexes import list_indexes
from schemas import subjects as S
from schemas.vectors import IndexSpec

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from gateway.app import State
else:
    pa = lazy.module("pyarrow")
    pacsv = lazy.module("pyarrow.csv")
    pq = lazy.module("pyarrow.parquet")

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
    shown = set(auth.visible(request, [s.name for s in specs]))
    specs = [s for s in specs if s.name in shown]
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
    await lazy.loaded("pyarrow.csv", "pyarrow.parquet")
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
