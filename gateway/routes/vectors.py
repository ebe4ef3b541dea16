"""Vector index routes: ``/v1/vectors/indexes`` (create, list), ``/v1/vectors/indexes/{name}``
(stats, delete), ``/v1/vectors/indexes/{name}/items`` (add, delete). Search and ``/v1/embed``
are in :mod:`gateway.routes.search`; both scatter to the partitions through :func:`gather`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pydantic_core
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway import auth, errors, limits
from gateway.routes import JsonRoute, state
from lakehouse.platform import lazy
from lakehouse.platform.errors import BadRequest, NotFound
from lakehouse.platform.rpc import scatter
from lakehouse.platform.storage import keys
from lakehouse.vectors import batches
from lakehouse.vectors.indexes import create_index, get_index, list_indexes
from schemas import subjects as S
from schemas.messages import Float
from schemas.vectors import (
    EmbedRequest,
    IndexDefinition,
    IndexSpec,
    SearchRequest,
    TextItem,
)

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(tags=["vectors"], route_class=JsonRoute)

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
        description="Items, each with exactly one of `vector` or `text`: at most "
        "`limits.max_items_per_add` (10,000 unless configured; 400 above) in a body of at "
        "most `limits.max_json_bytes`.",
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
async def create(
    body: IndexDefinition, request: Request, st: State = Depends(state)
) -> dict[str, Any]:
    auth.require_name(request, body.name)
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
async def indexes(request: Request, st: State = Depends(state)) -> dict[str, Any]:
    specs = await list_indexes(st.require_nats().jetstream())
    shown = set(auth.visible(request, [s.name for s in specs]))
    specs = [s for s in specs if s.name in shown]
    return {"indexes": [s.model_dump(mode="json", exclude={"v", "deleted"}) for s in specs]}


async def gather(
    st: State, spec: IndexSpec, req: SearchRequest | bytes, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[int]]:
    """Scatter ``req`` to the index's partition owners; their replies (dicts, by partition)
    and the partitions that did not answer in time."""
    wanted = set(range(spec.partitions))
    parsed: list[list[dict[str, Any]]] = []  # each reply parsed once, as it arrives
    seen: set[int] = set()

    def covered(replies: list[bytes]) -> bool:
        for r in replies[len(parsed) :]:
            parsed.append(pydantic_core.from_json(r))  # ~2× json.loads on these
            seen.update(p["partition"] for p in parsed[-1])
        return wanted <= seen

    raw = await scatter(
        st.require_nats(),
        S.search(spec.name),
        req,
        timeout=st.settings.vectors.search_timeout,
        done=covered,
        headers=headers,
    )
    covered(raw)  # replies that came after the last check
    parts: dict[int, dict[str, Any]] = {}
    for reply in parsed:
        for p in reply:
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
    await st.storage.delete_prefix(keys.index_snapshots(name))
    return {"name": name, "deleted": True}


@router.post(
    "/v1/vectors/indexes/{name}/items",
    status_code=202,
    summary="Add or replace items (upsert by id)",
    responses={
        202: {"model": AddReply, "description": "Published; the partitions apply it shortly."},
        **errors.responses(
            400,
            404,
            503,
            _400="Invalid request, or a vector whose length is not the index's dim; more items "
            "than `limits.max_items_per_add` (`error`: `limit exceeded`, `detail` naming the "
            "limit).",
        ),
    },
)
async def add(name: IndexName, body: AddBody, st: State = Depends(state)) -> JSONResponse:
    most = st.settings.limits.max_items_per_add
    limits.check("items", len(body.items), most, "limits.max_items_per_add", "; send them in parts")
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
        await lazy.loaded("pyarrow")  # batches are Arrow IPC; the first upload imports it
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
    await batches.publish_deletes(js, spec, body.ids)
    return JSONResponse({"deleted": len(body.ids)}, 202)
