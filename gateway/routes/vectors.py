"""Vector routes: ``/v1/vectors/indexes`` (create, list), ``/v1/vectors/indexes/{name}``
(stats, delete), ``/v1/vectors/indexes/{name}/items`` (add, delete),
``/v1/vectors/indexes/{name}/search`` (scatter/gather), and ``/v1/embed``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway import errors
from gateway.routes import state
from lakehouse.platform.errors import BadRequest, NotFound
from lakehouse.platform.rpc import call, scatter
from lakehouse.platform.storage import keys
from lakehouse.vectors import batches
from lakehouse.vectors.indexes import create_index, get_index, list_indexes
from schemas import subjects as S
from schemas.messages import Float, Int
from schemas.query import SqlRequest
from schemas.vectors import (
    QUERY_HEADER,
    EmbedRequest,
    EmbedText,
    Hit,
    IndexDefinition,
    IndexSpec,
    SearchRequest,
    TextItem,
)

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(tags=["vectors"])

IndexName = Annotated[S.Name, Path(description="Index name.", examples=["people"])]

COMPONENT = 1e15
"""Largest vector component magnitude: squares and sums of 8,192 of them stay finite in
float32, so every distance is a finite number."""

Component = Annotated[Float, Field(ge=-COMPONENT, le=COMPONENT, allow_inf_nan=False)]
Vector = Annotated[
    list[Component],
    Field(min_length=1, max_length=8192, description="The vector (its length: the index's dim)."),
]
ItemId = Annotated[str, Field(min_length=1, max_length=512, description="Item id (upsert key).")]
Metadata = Annotated[dict[str, Any] | None, Field(description="Returned with hits.")]


class IndexInfo(IndexDefinition):
    created_at: datetime | None = Field(None, description="When it was created (UTC).")


class IndexList(BaseModel):
    indexes: list[IndexInfo] = Field(description="Every live index, by name.")


class PartitionStats(BaseModel):
    partition: int = Field(description="Partition number.")
    owner: str = Field(description="Instance owning it.")
    count: int = Field(description="Live vectors in the partition.")
    covered_seq: int = Field(description="Last vectors-stream sequence applied.")
    memory_bytes: int = Field(description="Approximate index memory.")


class IndexStats(IndexInfo):
    count: int = Field(description="Live vectors over the partitions that answered.")
    memory_bytes: int = Field(description="Approximate memory over those partitions.")
    partitions_detail: list[PartitionStats] = Field(description="Per answering partition.")
    missing_partitions: list[int] = Field(description="Partitions whose owner did not answer.")


class IndexDeleted(BaseModel):
    name: str = Field(description="Index name.", examples=["people"])
    deleted: bool = Field(description="Always true.")


class VectorItem(BaseModel):
    """An item given as a vector."""

    model_config = ConfigDict(extra="forbid")
    id: ItemId
    vector: Vector
    metadata: Metadata = None


class TextItemBody(BaseModel):
    """An item given as text (embedded by the embed workers)."""

    model_config = ConfigDict(extra="forbid")
    id: ItemId
    text: str = Field(description="Text to embed.", examples=["Electrician, industrial wiring"])
    metadata: Metadata = None


class AddBody(BaseModel):
    items: list[VectorItem | TextItemBody] = Field(
        min_length=1,
        max_length=100_000,
        description="Items, each with exactly one of `vector` or `text`.",
        examples=[[{"id": "1", "text": "Electrician, industrial wiring, 480V"}]],
    )


class AddReply(BaseModel):
    accepted: int = Field(description="Items accepted.")
    vectors: int = Field(description="Of them, given as vectors.")
    texts: int = Field(description="Of them, given as text (embedded asynchronously).")


class DeleteBody(BaseModel):
    ids: list[ItemId] = Field(min_length=1, max_length=100_000)


class ItemsDeleted(BaseModel):
    deleted: int = Field(description="Ids whose deletion was published.")


class SearchOptions(BaseModel):
    k: Int = Field(10, ge=1, le=1000, description="Hits wanted.")
    ef: Int | None = Field(
        None, ge=1, le=4096, description="Beam width (default: the index's ef_search)."
    )
    filter: str | None = Field(
        None,
        min_length=1,
        description="SQL predicate over the index's dataset; only matching rows are returned.",
        examples=["state = 'IL' AND reliability > 0.8"],
    )


class VectorQuery(SearchOptions):
    """Search by a vector."""

    model_config = ConfigDict(extra="forbid")
    vector: Vector


class TextQuery(SearchOptions):
    """Search by text (embedded, cached)."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="Query text.", examples=["electrician with industrial wiring"])


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
    took_ms: float = Field(description="Total time in the gateway.")


class EmbedBody(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=1000, examples=[["forklift OSHA-30"]])


class EmbedReply(BaseModel):
    model: str = Field(description="The embedding model.", examples=["all-MiniLM-L6-v2"])
    dim: int = Field(description="Vector dimension.", examples=[384])
    vectors: list[list[float]] = Field(description="One vector per text, in order.")


async def require_index(st: State, name: str) -> IndexSpec:
    spec: IndexSpec | None = st.index_specs.get(name)
    if spec is None:
        spec = await get_index(st.require_nats().jetstream(), name)
        if spec is None:
            raise NotFound(f"no vector index named {name!r}")
        st.index_specs[name] = spec
    return spec


@router.post(
    "/v1/vectors/indexes",
    status_code=201,
    summary="Create a vector index",
    responses={
        201: {"model": IndexInfo, "description": "Created."},
        **errors.responses(400, 409, 503, _409="A live index has that name."),
    },
)
async def create(body: IndexDefinition, st: State = Depends(state)) -> dict[str, Any]:
    spec = await create_index(st.require_nats().jetstream(), IndexSpec(**body.model_dump()))
    return spec.model_dump(mode="json", exclude={"v", "deleted"})


@router.get(
    "/v1/vectors/indexes",
    summary="List vector indexes",
    responses={
        200: {"model": IndexList, "description": "Every live index."},
        **errors.responses(503),
    },
)
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


@router.get(
    "/v1/vectors/indexes/{name}",
    summary="Index definition and per-partition stats",
    responses={
        200: {"model": IndexStats, "description": "Definition and stats."},
        **errors.responses(400, 404, 503),
    },
)
async def index_stats(name: IndexName, st: State = Depends(state)) -> dict[str, Any]:
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


@router.delete(
    "/v1/vectors/indexes/{name}",
    summary="Delete an index, its vectors and snapshots",
    responses={
        200: {"model": IndexDeleted, "description": "Deleted."},
        **errors.responses(400, 404, 503),
    },
)
async def delete_index(name: IndexName, st: State = Depends(state)) -> dict[str, Any]:
    spec = await require_index(st, name)
    js = st.require_nats().jetstream()
    tomb = spec.model_copy(update={"deleted": True})
    await js.publish(S.index_def(name), tomb.model_dump_json().encode())
    await js.purge_stream(S.STREAM_VECTORS, subject=f"{S.VECTORS_PREFIX}.{name}.>")
    for obj in (await st.storage.list(keys.index_snapshots(name))).objects:
        await st.storage.delete(obj.key)
    return {"name": name, "deleted": True}


@router.post(
    "/v1/vectors/indexes/{name}/items",
    status_code=202,
    summary="Add or replace items (upsert by id)",
    responses={
        202: {"model": AddReply, "description": "Published; the partitions apply it shortly."},
        **errors.responses(
            400, 404, 503, _400="Invalid request, or a vector whose length is not the index's dim."
        ),
    },
)
async def add(name: IndexName, body: AddBody, st: State = Depends(state)) -> JSONResponse:
    spec = await require_index(st, name)
    js = st.require_nats().jetstream()
    vec_items = [i for i in body.items if isinstance(i, VectorItem)]
    text_items = [i for i in body.items if isinstance(i, TextItemBody)]
    for item in vec_items:
        if len(item.vector) != spec.dim:
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
            items=[TextItem(id=i.id, text=i.text, metadata=i.metadata) for i in text_items],
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


@router.delete(
    "/v1/vectors/indexes/{name}/items",
    status_code=202,
    summary="Delete items by id (a missing id is not an error)",
    responses={
        202: {"model": ItemsDeleted, "description": "Published; the partitions apply it shortly."},
        **errors.responses(400, 404, 503),
    },
)
async def delete_items(
    name: IndexName, body: DeleteBody, st: State = Depends(state)
) -> JSONResponse:
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
            "predicate, or a filter on an index without dataset/id_column.",
            _403="The filter reaches outside the datasets (the SQL sandbox).",
        ),
    },
)
async def search(
    name: IndexName, body: VectorQuery | TextQuery, st: State = Depends(state)
) -> Response:
    started = time.perf_counter()
    spec = await require_index(st, name)
    embed_ms = 0.0
    if isinstance(body, TextQuery):
        t = time.perf_counter()
        vector = (await embed_texts(st, [body.text]))["vectors"][0]
        embed_ms = (time.perf_counter() - t) * 1000
    else:
        vector = body.vector
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


@router.post(
    "/v1/embed",
    summary="Embed texts with the configured model",
    responses={
        200: {"model": EmbedReply, "description": "One vector per text."},
        **errors.responses(
            400, 503, 504, _503="No embed worker, or its provider (e.g. Ollama) is unreachable."
        ),
    },
)
async def embed(body: EmbedBody, st: State = Depends(state)) -> dict[str, Any]:
    return await embed_texts(st, body.texts)
