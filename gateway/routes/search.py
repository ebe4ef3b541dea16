"""Search routes: ``/v1/vectors/indexes/{name}/search`` (by vector or text, optionally
filtered by a SQL predicate over the index's dataset; scattered to every partition owner and
merged) and ``/v1/embed`` (the configured model, through the embed workers)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pydantic_core
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway import errors, filters, limits
from gateway.routes import JsonRoute, state
from gateway.routes.vectors import IndexName, Vector, gather, require_index
from lakehouse.platform import lazy
from lakehouse.platform.errors import BadRequest, LakehouseError
from lakehouse.platform.rpc import call
from lakehouse.tables import rows
from lakehouse.vectors import idsets
from lakehouse.vectors.idsets import IdSet
from schemas import subjects as S
from schemas.messages import Int
from schemas.query import RowsReply, RowsRequest, SqlRequest
from schemas.vectors import EmbedText, EmbedTextReply, Hit, IndexSpec

if TYPE_CHECKING:
    import pyarrow as pa

    from gateway.app import State
else:
    pa = lazy.module("pyarrow")

router = APIRouter(tags=["vectors"], route_class=JsonRoute)


K_CEILING = 10_000
"""The largest k the contract allows (``SearchRequest.k``); ``limits.max_k`` is the
configured limit under it."""


class SearchOptions(BaseModel):
    k: Int = Field(
        10,
        ge=1,
        le=K_CEILING,
        description="Hits wanted: at most `limits.max_k` (1000 unless configured; 400 above).",
    )
    ef: Int | None = Field(
        None, ge=1, le=4096, description="Beam width (default: the index's ef_search)."
    )
    filter: str | None = Field(
        None,
        min_length=1,
        description="SQL predicate over the index's dataset; only matching rows are returned. "
        "It may match at most `limits.max_filter_ids` rows (2,000,000 unless configured; "
        "400 above).",
        examples=["state = 'IL' AND reliability > 0.8"],
    )
    fields: list[str] | None = Field(
        None,
        description="Columns of each hit's `row` (index with a dataset): default all but long "
        "text columns; `[]`: no row, snippet or terms.",
        examples=[["name", "role", "city", "state"]],
    )


class VectorQuery(SearchOptions):
    """Search by a vector."""

    model_config = ConfigDict(extra="forbid")
    vector: Vector


class TextQuery(SearchOptions):
    """Search by text (embedded, cached)."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="Query text.", examples=["electrician with industrial wiring"])


class LikeQuery(SearchOptions):
    """More like an item: its row rendered through the index's `text_template` (the text it
    was embedded from) is the query; the item itself is left out of the hits."""

    model_config = ConfigDict(extra="forbid")
    like: str = Field(min_length=1, description="Item id.", examples=["274"])


class PartitionTiming(BaseModel):
    partition: int
    owner: str
    took_ms: float
    count: int


class SearchReply(BaseModel):
    hits: list[Hit] = Field(description="The k nearest, closest first.")
    partial: bool = Field(description="True when some partition did not answer in time.")
    missing_partitions: list[int] = Field(description="Those partitions.")
    partitions: list[PartitionTiming] = Field(description="Per answering partition.")
    embed_ms: float = Field(description="Time embedding the query text.")
    filter_ms: float = Field(description="Time resolving the filter.")
    filter_matches: int | None = Field(description="Rows the filter matched (null: no filter).")
    filter_cached: bool = Field(
        description="The filter's id set came from the gateway's cache (kept until a catalog "
        "event changes a dataset the filter reads)."
    )
    rows_ms: float = Field(description="Time fetching the hits' rows.")
    took_ms: float = Field(description="Total time in the gateway.")


class EmbedBody(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=1000, examples=[["forklift OSHA-30"]])


async def embed_texts(st: State, texts: list[str]) -> dict[str, Any]:
    raw = await call(
        st.require_nats(),
        S.EMBED_TEXT,
        EmbedText(texts=texts),
        timeout=st.settings.embed.timeout,
        what="embed",
    )
    out: dict[str, Any] = json.loads(raw)
    return out


async def resolve_filter(st: State, spec: IndexSpec, predicate: str) -> tuple[IdSet, bool]:
    """The ids of the index's dataset rows matching ``predicate`` (via a query worker, the
    same sandbox as /v1/sql; cached until the dataset changes) and whether it was cached."""
    qs = st.settings.query

    async def run(req: SqlRequest) -> pa.Table:
        raw = await call(st.require_nats(), S.QUERY_SQL, req, timeout=qs.timeout + 5, what="query")
        return pa.ipc.open_stream(pa.BufferReader(raw)).read_all()

    cap, setting = filters.id_cap(st.settings)
    return await st.filters.ids(spec, predicate, st.catalog_seq, run, cap, setting)


@router.post(
    "/v1/vectors/indexes/{name}/search",
    summary="Top-k search by vector or text, optionally filtered",
    response_class=Response,
    responses={
        200: {"model": SearchReply, "description": "The hits."},
        **errors.responses(
            400,
            403,
            404,
            503,
            504,
            _400="Invalid request, a query of the wrong dimension, a filter that is not a valid "
            "predicate, or a filter on an index without dataset/id_column; `like` an item that "
            "has no row; `k` over `limits.max_k`, or a filter matching more rows than "
            "`limits.max_filter_ids` (`error`: `limit exceeded`, `detail` naming the limit).",
            _403="The filter reaches outside the datasets (the SQL sandbox).",
        ),
    },
)
async def search(
    name: IndexName, body: VectorQuery | TextQuery | LikeQuery, st: State = Depends(state)
) -> Response:
    started = time.perf_counter()
    limits.check("k", body.k, st.settings.limits.max_k, "limits.max_k")
    spec = await require_index(st, name)
    embed_ms = rows_ms = 0.0
    text, k = None, body.k
    if isinstance(body, LikeQuery):
        t = time.perf_counter()
        text, k = await like_text(st, spec, body.like), body.k + 1
        rows_ms = (time.perf_counter() - t) * 1000
    elif isinstance(body, TextQuery):
        text = body.text
    if text is not None:
        t = time.perf_counter()
        vector = (await embed_texts(st, [text]))["vectors"][0]
        embed_ms = (time.perf_counter() - t) * 1000
    else:
        assert isinstance(body, VectorQuery)
        vector = body.vector
    if len(vector) != spec.dim:
        raise BadRequest(f"query has dimension {len(vector)}; index {name!r} has {spec.dim}")
    ids, cached = None, False
    filter_ms = 0.0
    if body.filter is not None:
        t = time.perf_counter()
        ids, cached = await resolve_filter(st, spec, body.filter)
        filter_ms = (time.perf_counter() - t) * 1000
    # The binary form: float32 bytes (then the id set), parameters in a header.
    parts, missing = await gather(st, spec, *idsets.query(vector, k, body.ef, ids))
    hits = sorted((h for p in parts for h in p["hits"]), key=lambda h: h["distance"])
    if isinstance(body, LikeQuery):
        hits = [h for h in hits if h["id"] != body.like]
    hits = hits[: body.k]
    if spec.dataset and spec.id_column and body.fields != [] and hits:
        t = time.perf_counter()
        words = rows.terms(body.text) if isinstance(body, TextQuery) else []
        await attach_rows(st, spec, hits, body.fields, words)
        rows_ms += (time.perf_counter() - t) * 1000
    out = {
        "hits": hits,
        "partial": bool(missing),
        "missing_partitions": missing,
        "partitions": [
            {k: p[k] for k in ("partition", "owner", "took_ms", "count")} for p in parts
        ],
        "embed_ms": round(embed_ms, 3),
        "filter_ms": round(filter_ms, 3),
        "filter_matches": None if ids is None else ids.count,
        "filter_cached": cached,
        "rows_ms": round(rows_ms, 3),
        "took_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    return Response(pydantic_core.to_json(out), media_type="application/json")


async def fetch_rows(st: State, spec: IndexSpec, ids: list[str]) -> RowsReply:
    """The rows of ``ids`` in the index's dataset, from a query worker's in-memory copy."""
    assert spec.dataset and spec.id_column
    req = RowsRequest(
        dataset=spec.dataset, id_column=spec.id_column, ids=ids, min_catalog_seq=st.catalog_seq
    )
    raw = await call(
        st.require_nats(), S.QUERY_ROWS, req, timeout=st.settings.query.timeout, what="query"
    )
    return RowsReply.model_validate_json(raw)


async def attach_rows(
    st: State,
    spec: IndexSpec,
    hits: list[dict[str, Any]],
    fields: list[str] | None,
    words: list[str],
) -> None:
    """Give each hit its ``row`` (``fields``, default all but long text), a ``snippet`` of its
    long text with the query's ``words`` marked, and the ``terms`` found in the row. When the
    dataset itself is gone (deleted, or never registered), every ``row`` is null."""
    try:
        reply = await fetch_rows(st, spec, [h["id"] for h in hits])
    except LakehouseError as exc:
        if exc.status != 404:  # the query worker's "no dataset named ..."
            raise
        for hit in hits:
            hit["row"] = None
        return
    names = [c.name for c in reply.columns]
    if fields is not None and (unknown := [f for f in fields if f not in names]):
        raise BadRequest(f"unknown fields {unknown}; dataset {spec.dataset!r} has {names}")
    shown = fields if fields is not None else [n for n in names if n not in reply.long]
    for hit in hits:
        values = reply.rows.get(hit["id"])
        if values is None:
            hit["row"] = None
            continue
        row = dict(zip(names, values, strict=True))
        hit["row"] = {f: row[f] for f in shown}
        hit["snippet"] = rows.snippet(row, reply.long, words)
        hit["terms"] = rows.found_terms(row, words) if words else []


async def like_text(st: State, spec: IndexSpec, item: str) -> str:
    """The text an item was embedded from: its row through the index's text template."""
    if not (spec.dataset and spec.id_column and spec.text_template):
        raise BadRequest(
            f"index {spec.name!r} has no dataset/id_column/text_template to search like an item"
        )
    try:
        reply = await fetch_rows(st, spec, [item])
    except LakehouseError as exc:
        if exc.status != 404:
            raise
        raise BadRequest(f"like: the index's dataset {spec.dataset!r} does not exist") from None
    if item not in reply.rows:  # a bad reference in the request, not a missing resource
        raise BadRequest(f"like: no row with {spec.id_column} = {item!r} in {spec.dataset!r}")
    row = dict(zip((c.name for c in reply.columns), reply.rows[item], strict=True))
    return rows.render(spec.text_template, row)


@router.post(
    "/v1/embed",
    summary="Embed texts with the configured model",
    responses={
        200: {"model": EmbedTextReply, "description": "One vector per text."},
        **errors.responses(
            400, 503, 504, _503="No embed worker, or its provider (e.g. Ollama) is unreachable."
        ),
    },
)
async def embed(body: EmbedBody, st: State = Depends(state)) -> dict[str, Any]:
    return await embed_texts(st, body.texts)
