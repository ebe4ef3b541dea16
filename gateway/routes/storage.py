"""The seed's storage routes: PUT/GET/DELETE ``/v1/storage/{key}``, ``GET /v1/storage/list``.

Bodies stream both ways. A PUT over ``gateway.max_put_bytes`` gets 413 (up front from
Content-Length, or mid-stream for chunked bodies) and stores nothing; more than
``gateway.max_concurrent_puts`` PUTs at once get 503 with ``Retry-After: 5``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.convertors import Convertor, register_url_convertor

from gateway.routes import state
from lakehouse.platform.errors import BadRequest, Busy, TooLarge
from lakehouse.platform.storage import LIST_LIMIT, ObjectInfo, validate_key

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(prefix="/v1/storage", tags=["storage"])


class KeyConvertor(Convertor[str]):
    """Like ``path`` but also matching CR/LF, so such keys get 400 (invalid key), not 404."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("objkey", KeyConvertor())


def _info(o: ObjectInfo) -> dict[str, Any]:
    return {"key": o.key, "size": o.size, "modified": o.modified.isoformat()}


@router.get(
    "/list",
    summary="List objects under a prefix (at most 10,000; see `truncated`)",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "prefix": "datasets/",
                        "objects": [
                            {"key": "datasets/a.parquet", "size": 10, "modified": "2026-01-01"}
                        ],
                        "truncated": False,
                    }
                }
            }
        }
    },
)
async def list_objects(
    prefix: str = Query("", description="Key prefix", examples=["datasets/"]),
    limit: int = Query(LIST_LIMIT, ge=1, le=LIST_LIMIT),
    st: State = Depends(state),
) -> dict[str, Any]:
    for bad in ("\x00", "\r", "\n", "\t"):
        if bad in prefix:
            raise BadRequest("prefix contains a control character", error="invalid prefix")
    listing = await st.storage.list(prefix, limit)
    return {
        "prefix": prefix,
        "objects": [_info(o) for o in listing.objects],
        "truncated": listing.truncated,
    }


@router.put(
    "/{key:objkey}",
    summary="Store an object (streamed; atomic)",
    responses={
        200: {"content": {"application/json": {"example": {"key": "a/b.csv", "size": 3}}}},
        400: {"description": "invalid key"},
        413: {"description": "body over the limit"},
        503: {"description": "too many concurrent uploads; retry after Retry-After seconds"},
    },
)
async def put_object(key: str, request: Request, st: State = Depends(state)) -> dict[str, Any]:
    validate_key(key)
    cap = st.settings.gateway.max_put_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise TooLarge(f"Content-Length {length} exceeds the {cap}-byte limit")
    if st.put_slots.locked():
        raise Busy(
            f"{st.settings.gateway.max_concurrent_puts} uploads already in progress", retry_after=5
        )
    async with st.put_slots:
        info = await st.storage.put(key, request.stream(), max_bytes=cap)
    return _info(info)


@router.get("/{key:objkey}", summary="Fetch an object (streamed)", response_class=StreamingResponse)
async def get_object(key: str, st: State = Depends(state)) -> StreamingResponse:
    info, body = await st.storage.open(key)
    return StreamingResponse(
        body,
        media_type="application/octet-stream",
        headers={"Content-Length": str(info.size)},
    )


@router.delete("/{key:objkey}", status_code=204, summary="Delete an object (idempotent)")
async def delete_object(key: str, st: State = Depends(state)) -> Response:
    await st.storage.delete(key)
    return Response(status_code=204)
