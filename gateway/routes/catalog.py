"""Catalog routes: register, manifest, list, delete, history (request/reply to the catalog
worker)."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import Field

from gateway.routes import state
from lakehouse.platform.rpc import call
from schemas import subjects as S
from schemas.catalog import NameRequest, RegisterReply, RegisterRequest

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])


class RegisterBody(RegisterRequest):
    request_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        description="Idempotency key; a repeat with the same key changes nothing.",
    )


def json_response(body: bytes) -> Response:
    return Response(body, media_type="application/json")


async def ask(st: State, subject: str, payload: Any) -> bytes:
    return await call(
        st.require_nats(),
        subject,
        payload,
        timeout=st.settings.nats.request_timeout,
        what="catalog",
    )


@router.post("/register", summary="Register (or re-register) a dataset's objects")
async def register(body: RegisterBody, st: State = Depends(state)) -> Response:
    raw = await ask(st, S.CATALOG_REGISTER, RegisterRequest(**body.model_dump()))
    st.saw_catalog_seq(RegisterReply.model_validate_json(raw).catalog_seq)
    return json_response(raw)


@router.get("/manifest/{name}", summary="A dataset's current manifest")
async def manifest(name: str, st: State = Depends(state)) -> Response:
    return json_response(await ask(st, S.CATALOG_GET, NameRequest(name=name)))


@router.get("/list", summary="Every registered dataset")
async def list_datasets(st: State = Depends(state)) -> Response:
    return json_response(await ask(st, S.CATALOG_LIST, b"{}"))


@router.get("/{name}/history", summary="Every revision of a dataset, from the event stream")
async def history(name: str, st: State = Depends(state)) -> Response:
    return json_response(await ask(st, S.CATALOG_HISTORY, NameRequest(name=name)))


@router.delete("/{name}", summary="Delete a dataset (tombstone event; objects become orphans)")
async def delete(name: str, st: State = Depends(state)) -> Response:
    raw = await ask(st, S.CATALOG_DELETE, NameRequest(name=name))
    st.saw_catalog_seq(int(json.loads(raw)["catalog_seq"]))
    return json_response(raw)
