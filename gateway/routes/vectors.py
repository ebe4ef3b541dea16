"""Vector routes: index admin, add/delete items, search (scatter/gather), and /v1/embed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from gateway.routes import state
from lakehouse.platform.errors import BadRequest, NotFound
from lakehouse.platform.rpc import call, scatter
from lakehouse.platform.storage import keys
from lakehouse.vectors import batches
from lakehouse.vectors.indexes import create_index, get_index, list_indexes
from schemas import subjects as S
from schemas.query import SqlRequest
from schemas.vectors import (
    QUERY_HEADER,
    EmbedRequest,
    EmbedText,
    IndexSpec,
    Metric,
    SearchRequest,
    TextItem,
)

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(tags=["vectors"])


class IndexBody(BaseModel):
    name: str = Field(description="Index name [A-Za-z0-9_-]{1,128}.", examples=["workers"])
    dim: int = Field(ge=1, le=8192, description="Vector dimension.", examples=[384])
    metric: Metric = "cosine"
    partitions: int = Field(4, ge=1, le=256)
    M: int = Field(16, ge=2, le=128)
    ef_construction: int = Field(200, ge=8, le=4096)
    ef_search: int = Field(64, ge=1, le=4096)
    model: str | None = Field(None, description="Embedding model for text items/queries.")
    dataset: str | None = Field(None, description="Dataset the items come from (filters).")
    id_column: str | None = Field(None, description="Column of dataset holding item ids.")


class Item(BaseModel):
    id: str = Field(min_length=1, max_length=512, description="Item id (upsert key).")
    vector: list[float] | None = Field(None, description="The vector, or give text.")
    text: str | None = Field(None, description="Text to embed (through the embed workers).")
    metadata: dict[str, Any] | None = Field(None, description="Returned with hits.")


class AddBody(BaseModel):
    items: list[Item] = Field(min_length=1, max_length=100_000)


class DeleteBody(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=100_000)


class SearchBody(BaseModel):
    vector: list[float] | None = Field(None, description="Query vector, or give text.")
    text: str | None = Field(None, description="Query text (embedded, cached).")
    k: int = Field(10, ge=1, le=1000)
    ef: int | None = Field(None, ge=1, le=4096)
    filter: str | None = Field(
        None,
        description="SQL predicate over the index's dataset; only matching rows are returned.",
        examples=["state = 'IL' AND reliability > 0.8"],
    )


class EmbedBody(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=1000)


async def require_index(st: State, name: str) -> IndexSpec:
    if not S.valid_name(name):
        raise BadRequest(f"invalid index name {name!r}: use 1-128 of [A-Za-z0-9_-]")
    spec: IndexSpec | None = st.index_specs.get(name)
    if spec is None:
        spec = await get_index(st.require_nats().jetstream(), name)
        if spec is None:
            raise NotFound(f"no vector index named {name!r}")
        st.index_specs[name] = spec
    return spec


@router.post("/v1/vectors/index", status_code=201, summary="Create a vector index")
async def create(body: IndexBody, st: State = Depends(state)) -> dict[str, Any]:
    if not S.valid_name(body.name):
        raise BadRequest(f"invalid index name {body.name!r}: use 1-128 of [A-Za-z0-9_-]")
    spec = await create_index(st.require_nats().jetstream(), IndexSpec(**body.model_dump()))
    return spec.model_dump(mode="json", exclude={"v", "deleted"})


@router.get("/v1/vectors/index", summary="List vector indexes")
async def indexes(st: State = Depends(state)) -> dict[str, Any]:
    specs = await list_indexes(st.require_nats().jetstream())
    return {"indexes": [s.model_dump(mode="json", exclude={"v", "deleted"}) for s in specs]}


async def gather(
    st: State, spec: IndexSpec, req: SearchRequest | bytes, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[int]]:
    """Scatter ``req`` to the index's partition owners; their replies (dicts, by partition)
    and the partitions that did not answer in time."""
    wanted = set(range(spec.partitions))

    def covered(replies: list[bytes]) -> bool:
        seen = {p["partition"] for r in replies for p in json.loads(r)}
        return wanted <= seen

    raw = await scatter(
        st.require_nats(),
        S.search(spec.name),
        req,
        timeout=st.settings.vectors.search_timeout,
        done=covered,
        headers=headers,
    )
    parts: dict[int, dict[str, Any]] = {}
    for r in raw:
        for p in json.loads(r):
            parts.setdefault(p["partition"], p)
    return [parts[p] for p in sorted(parts)], sorted(wanted - set(parts))


@router.get("/v1/vectors/index/{name}", summary="Index definition and per-partition stats")
async def index_stats(name: str, st: State = Depends(state)) -> dict[str, Any]:
    spec = await require_index(st, name)
    parts, missing = await gather(st, spec, SearchRequest(vector=[], op="stats"))
    return {
        **spec.model_dump(mode="json", exclude={"v", "deleted"}),
        "count": sum(p["count"] for p in parts),
        "memory_bytes": sum(p["memory_bytes"] for p in parts),
        "partitions_detail": [
            {k: v for k, v in p.items() if k not in ("hits", "took_ms")} for p in parts
        ],
        "missing_partitions": missing,
    }


@router.delete("/v1/vectors/index/{name}", summary="Delete an index, its vectors and snapshots")
async def delete_index(name: str, st: State = Depends(state)) -> dict[str, Any]:
    spec = await require_index(st, name)
    js = st.require_nats().jetstream()
    tomb = spec.model_copy(update={"deleted": True})
    await js.publish(S.index_def(name), tomb.model_dump_json().encode())
    await js.purge_stream(S.STREAM_VECTORS, subject=f"{S.VECTORS_PREFIX}.{name}.>")
    for obj in (await st.storage.list(keys.index_snapshots(name))).objects:
        await st.storage.delete(obj.key)
    return {"name": name, "deleted": True}


@router.post("/v1/vectors/index/{name}/add", summary="Add or replace items (upsert by id)")
async def add(name: str, body: AddBody, st: State = Depends(state)) -> JSONResponse:
    spec = await require_index(st, name)
    js = st.require_nats().jetstream()
    vec_items = [i for i in body.items if i.vector is not None]
    text_items = [i for i in body.items if i.vector is None]
    for item in body.items:
        if (item.vector is None) == (item.text is None):
            raise BadRequest(f"item {item.id!r}: give exactly one of vector or text")
        if item.vector is not None and len(item.vector) != spec.dim:
            raise BadRequest(
                f"item {item.id!r} has dimension {len(item.vector)}; index {name!r} has {spec.dim}"
            )
    acks: list[Awaitable[Any]] = []
    if vec_items:
        encoded = batches.batches(
            [i.id for i in vec_items],
            np.asarray([i.vector for i in vec_items], dtype=np.float32),
            [i.metadata for i in vec_items],
            dim=spec.dim,
            partitions=spec.partitions,
        )
        acks.append(asyncio.ensure_future(batches.publish(js, name, encoded)))
    if text_items:
        req = EmbedRequest(
            batch_id=uuid.uuid4().hex,
            index=name,
            items=[TextItem(id=i.id, text=i.text or "", metadata=i.metadata) for i in text_items],
        )
        acks.append(
            await js.publish_async(
                S.embed_requests(name),
                req.model_dump_json().encode(),
                headers={"Nats-Msg-Id": req.batch_id},
            )
        )
    await asyncio.gather(*acks)
    return JSONResponse(
        {"accepted": len(body.items), "vectors": len(vec_items), "texts": len(text_items)}, 202
    )


@router.delete("/v1/vectors/index/{name}/items", summary="Delete items by id")
async def delete_items(name: str, body: DeleteBody, st: State = Depends(state)) -> JSONResponse:
    spec = await require_index(st, name)
    js = st.require_nats().jetstream()
    encoded = batches.batches(body.ids, None, dim=spec.dim, partitions=spec.partitions, op="delete")
    await batches.publish(js, name, encoded)
    return JSONResponse({"deleted": len(body.ids)}, 202)


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


async def resolve_filter(st: State, spec: IndexSpec, predicate: str) -> list[str]:
    """The ids of the index's dataset rows matching ``predicate``, via a query worker (the
    same sandbox as /v1/sql)."""
    if not spec.dataset or not spec.id_column:
        raise BadRequest(
            f"index {spec.name!r} has no dataset/id_column, so it cannot be filtered; "
            "create it with them (or through ingest's auto-embed)"
        )
    col = '"' + spec.id_column.replace('"', '""') + '"'
    sql = f'SELECT CAST({col} AS VARCHAR) AS id FROM "{spec.dataset}" WHERE {predicate}'
    req = SqlRequest(sql=sql, format="arrow", min_catalog_seq=st.catalog_seq)
    qs = st.settings.query
    raw = await call(st.require_nats(), S.QUERY_SQL, req, timeout=qs.timeout + 5, what="query")
    table = pa.ipc.open_stream(pa.BufferReader(raw)).read_all()
    if (table.schema.metadata or {}).get(b"lakehouse.truncated") == b"true":
        raise BadRequest(f"the filter matches more than {qs.max_rows_arrow} rows; narrow it")
    return [i for i in table.column("id").to_pylist() if i is not None]


@router.post("/v1/vectors/index/{name}/search", summary="Top-k search by vector or text")
async def search(name: str, body: SearchBody, st: State = Depends(state)) -> Response:
    started = time.perf_counter()
    spec = await require_index(st, name)
    if (body.vector is None) == (body.text is None):
        raise BadRequest("give exactly one of vector or text")
    vector = body.vector
    embed_ms = 0.0
    if body.text is not None:
        t = time.perf_counter()
        vector = (await embed_texts(st, [body.text]))["vectors"][0]
        embed_ms = (time.perf_counter() - t) * 1000
    assert vector is not None
    if len(vector) != spec.dim:
        raise BadRequest(f"query has dimension {len(vector)}; index {name!r} has {spec.dim}")
    allowed = None
    filter_ms = 0.0
    if body.filter is not None:
        t = time.perf_counter()
        allowed = await resolve_filter(st, spec, body.filter)
        filter_ms = (time.perf_counter() - t) * 1000
    if allowed is None:  # the binary form: float32 bytes, parameters in a header
        query = np.asarray(vector, dtype="<f4").tobytes()
        params = {QUERY_HEADER: json.dumps({"k": body.k, "ef": body.ef})}
        parts, missing = await gather(st, spec, query, params)
    else:  # built by hand: validating a few hundred floats again costs more than the search
        req = json.dumps({"vector": vector, "k": body.k, "ef": body.ef, "allowed_ids": allowed})
        parts, missing = await gather(st, spec, req.encode())
    hits = sorted((h for p in parts for h in p["hits"]), key=lambda h: h["distance"])[: body.k]
    out = {
        "hits": hits,
        "partial": bool(missing),
        "missing_partitions": missing,
        "partitions": [
            {k: p[k] for k in ("partition", "owner", "took_ms", "count")} for p in parts
        ],
        "embed_ms": round(embed_ms, 3),
        "filter_ms": round(filter_ms, 3),
        "filter_matches": None if allowed is None else len(allowed),
        "took_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    return Response(json.dumps(out), media_type="application/json")


@router.post("/v1/embed", summary="Embed texts with the configured model")
async def embed(body: EmbedBody, st: State = Depends(state)) -> dict[str, Any]:
    return await embed_texts(st, body.texts)
