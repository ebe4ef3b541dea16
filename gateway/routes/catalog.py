"""Catalog routes (request/reply to the catalog worker): ``GET /v1/catalog`` lists,
``POST /v1/catalog`` registers, ``GET|DELETE /v1/catalog/{name}``,
``GET /v1/catalog/{name}/history``, ``POST /v1/catalog/{name}/compact`` (rewrites the rows,
so it waits longer than the others: :data:`COMPACT_TIMEOUTS` request timeouts)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import Field

from gateway import auth, errors
from gateway.routes import JsonRoute, state
from lakehouse.platform.rpc import call
from schemas import subjects as S
from schemas.catalog import (
    CompactRequest,
    DatasetList,
    DeleteReply,
    History,
    Manifest,
    NameRequest,
    RegisterReply,
    RegisterRequest,
)

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(prefix="/v1/catalog", tags=["catalog"], route_class=JsonRoute)

COMPACT_TIMEOUTS = 30
"""A compaction reads and rewrites every row of the dataset: it may take this many
``nats.request_timeout`` before the gateway gives up on it (504; it goes on in the worker)."""

DatasetName = Annotated[S.Name, Path(description="Dataset name.", examples=["workers"])]


class RegisterBody(RegisterRequest):
    request_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        description="Idempotency key; a repeat with the same key changes nothing.",
    )


def json_response(body: bytes) -> Response:
    return Response(body, media_type="application/json")


async def ask(st: State, subject: str, payload: Any, *, timeouts: float = 1) -> bytes:
    """The catalog worker's reply; it may take ``timeouts`` request timeouts."""
    return await call(
        st.require_nats(),
        subject,
        payload,
        timeout=st.settings.nats.request_timeout * timeouts,
        what="catalog",
    )


@router.get(
    "",
    summary="Every registered dataset",
    response_class=Response,
    responses={
        200: {"model": DatasetList, "description": "Every current manifest."},
        **errors.responses(503, 504),
    },
)
async def list_datasets(request: Request, st: State = Depends(state)) -> Response:
    raw = await ask(st, S.CATALOG_LIST, b"{}")
    if not auth.key_of(request).scoped:
        return json_response(raw)
    listed = DatasetList.model_validate_json(raw)
    keep = set(auth.visible(request, [m.name for m in listed.datasets]))
    listed.datasets = [m for m in listed.datasets if m.name in keep]
    return json_response(listed.model_dump_json().encode())


@router.post(
    "",
    summary="Register (or re-register) a dataset's objects",
    response_class=Response,
    responses={
        200: {"model": RegisterReply, "description": "Registered: the new manifest."},
        **errors.responses(
            400,
            409,
            503,
            504,
            _409="`mode=append` with columns whose schema fingerprint differs from the "
            "registered dataset's.",
        ),
    },
)
async def register(body: RegisterBody, request: Request, st: State = Depends(state)) -> Response:
    auth.require_name(request, body.name)
    raw = await ask(st, S.CATALOG_REGISTER, RegisterRequest(**body.model_dump()))
    st.saw_catalog_seq(RegisterReply.model_validate_json(raw).catalog_seq)
    return json_response(raw)


@router.get(
    "/{name}",
    summary="A dataset's current manifest",
    response_class=Response,
    responses={
        200: {"model": Manifest, "description": "The manifest."},
        **errors.responses(400, 404, 503, 504),
    },
)
async def manifest(name: DatasetName, st: State = Depends(state)) -> Response:
    return json_response(await ask(st, S.CATALOG_GET, NameRequest(name=name)))


@router.delete(
    "/{name}",
    summary="Delete a dataset (tombstone event; objects become orphans)",
    response_class=Response,
    responses={
        200: {"model": DeleteReply, "description": "Deleted."},
        **errors.responses(400, 404, 503, 504),
    },
)
async def delete(name: DatasetName, st: State = Depends(state)) -> Response:
    raw = await ask(st, S.CATALOG_DELETE, NameRequest(name=name))
    st.saw_catalog_seq(DeleteReply.model_validate_json(raw).catalog_seq)
    return json_response(raw)


@router.get(
    "/{name}/history",
    summary="Every revision of a dataset, from the event stream",
    response_class=Response,
    responses={
        200: {"model": History, "description": "Every event, oldest first."},
        **errors.responses(400, 404, 503, 504),
    },
)
async def history(name: DatasetName, st: State = Depends(state)) -> Response:
    return json_response(await ask(st, S.CATALOG_HISTORY, NameRequest(name=name)))


@router.post(
    "/{name}/compact",
    summary="Rewrite a dataset's rows into fresh objects without its delete sets",
    response_class=Response,
    responses={
        200: {
            "model": RegisterReply,
            "description": "The manifest after compaction (a new revision), or the current one "
            "unchanged when there was nothing to compact (one object, no delete sets).",
        },
        **errors.responses(
            400,
            404,
            409,
            503,
            504,
            _409="The dataset's objects cannot be read back (missing from storage): there is "
            "nothing to rewrite them from.",
            _503="Unavailable (NATS unreachable, no catalog worker, or the dataset kept changing "
            "while it was compacted): retry after ``Retry-After`` seconds.",
            _504="No answer in time; the compaction may still finish in the catalog worker.",
        ),
    },
)
async def compact(name: DatasetName, st: State = Depends(state)) -> Response:
    raw = await ask(st, S.CATALOG_COMPACT, CompactRequest(name=name), timeouts=COMPACT_TIMEOUTS)
    st.saw_catalog_seq(RegisterReply.model_validate_json(raw).catalog_seq)
    return json_response(raw)
