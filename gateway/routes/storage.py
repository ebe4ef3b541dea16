"""Storage routes: ``GET /v1/storage?prefix=`` lists, ``PUT|GET|DELETE /v1/storage/{key}``
stores, fetches and deletes one object (any key, ``list`` included).

Bodies stream both ways. A PUT over ``gateway.max_put_bytes`` gets 413 (up front from
Content-Length, or mid-stream for chunked bodies) and stores nothing; more than
``gateway.max_concurrent_puts`` PUTs at once get 503 with ``Retry-After: 5``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.convertors import Convertor, register_url_convertor

from gateway import errors
from gateway.routes import JsonRoute, state
from gateway.uploads import refuse_oversize
from lakehouse.platform.errors import BadRequest, Busy
from lakehouse.platform.storage import LIST_LIMIT, MAX_KEY_BYTES, ObjectInfo, validate_key

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(prefix="/v1/storage", tags=["storage"], route_class=JsonRoute)

MAX_SEGMENT_BYTES = 255
"""Longest segment of a key (a file name on the file backend)."""

_C = r"[^/\x00\t\n\r]"  # a character of a segment
_N = r"[^./\x00\t\n\r]"  # ... that is not a dot
_SEGMENT = rf"(?:{_N}{_C}{{0,254}}|\.{_N}{_C}{{0,253}}|\.\.{_C}{{1,253}})"
KEY_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
"""The HTTP API's object keys, the same on every backend: ``/``-separated segments of 1-255
characters, none of them ``.`` or ``..``, without NUL, CR, LF or tab (so no leading,
trailing or doubled ``/``). Lengths in bytes (1024 in all, 255 a segment, UTF-8) are checked
by :func:`check_key`; JSON Schema can only count characters."""

KEY_DESCRIPTION = (
    "Object key: `/`-separated segments, none empty, `.` or `..`, without NUL, CR, LF or "
    f"tab; at most {MAX_KEY_BYTES} bytes in UTF-8, and {MAX_SEGMENT_BYTES} bytes a segment "
    "(400 otherwise). The file backend reserves keys under `.lakehouse-tmp/`."
)

Key = Annotated[
    str,
    Path(
        description=KEY_DESCRIPTION,
        pattern=KEY_PATTERN,
        min_length=1,
        max_length=MAX_KEY_BYTES,
        examples=["docs/sample.csv"],
    ),
]


class KeyConvertor(Convertor[str]):
    """Like ``path`` but also matching CR/LF and the empty key, so such keys get 400, not 404."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("objkey", KeyConvertor())


class StoredObject(BaseModel):
    key: str = Field(description="Object key.", examples=["docs/sample.csv"])
    size: int = Field(ge=0, description="Bytes.", examples=[16])
    modified: datetime = Field(description="Last write (UTC).")


class ObjectListing(BaseModel):
    prefix: str = Field(description="The prefix asked for.", examples=["docs/"])
    objects: list[StoredObject] = Field(description="Objects under the prefix, in key order.")
    truncated: bool = Field(description="True when more objects than `limit` matched.")


def check_key(key: str) -> str:
    """What the key pattern cannot say: the byte lengths (and the storage layer's own rules)."""
    validate_key(key)
    for segment in key.split("/"):
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise BadRequest(
                f"a key segment is longer than {MAX_SEGMENT_BYTES} bytes", error="invalid key"
            )
    return key


def _info(o: ObjectInfo) -> dict[str, Any]:
    return {"key": o.key, "size": o.size, "modified": o.modified.isoformat()}


@router.get(
    "",
    summary=f"List objects under a prefix (at most {LIST_LIMIT:,}; see `truncated`)",
    responses={
        200: {"model": ObjectListing, "description": "The objects, in key order."},
        **errors.responses(400),
    },
)
async def list_objects(
    prefix: str = Query(
        "",
        description="Key prefix (no NUL, CR, LF or tab).",
        pattern=r"^[^\x00\t\n\r]*$",
        max_length=MAX_KEY_BYTES,
        examples=["docs/"],
    ),
    limit: int = Query(LIST_LIMIT, ge=1, le=LIST_LIMIT, description="Most objects to list."),
    st: State = Depends(state),
) -> dict[str, Any]:
    listing = await st.storage.list(prefix, limit)
    return {
        "prefix": prefix,
        "objects": [_info(o) for o in listing.objects],
        "truncated": listing.truncated,
    }


@router.put(
    "/{key:objkey}",
    summary="Store an object (streamed; atomic; replaces an existing one)",
    openapi_extra={
        "requestBody": {
            "description": "The object's bytes (any length up to `gateway.max_put_bytes`).",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
    responses={
        200: {"model": StoredObject, "description": "Stored."},
        **errors.responses(
            400,
            409,
            413,
            503,
            _409="The key collides with another object's path on the file backend "
            "(`a` and `a/b` cannot both exist there).",
            _503="Too many uploads in progress: retry after `Retry-After` seconds.",
        ),
    },
)
async def put_object(key: Key, request: Request, st: State = Depends(state)) -> dict[str, Any]:
    check_key(key)
    cap = st.settings.gateway.max_put_bytes
    refuse_oversize(request, cap)
    if st.put_slots.locked():
        raise Busy(
            f"{st.settings.gateway.max_concurrent_puts} uploads already in progress", retry_after=5
        )
    async with st.put_slots:
        info = await st.storage.put(key, request.stream(), max_bytes=cap)
    return _info(info)


@router.get(
    "/{key:objkey}",
    summary="Fetch an object (streamed)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The object's bytes.",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        **errors.responses(400, 404),
    },
)
async def get_object(key: Key, st: State = Depends(state)) -> StreamingResponse:
    info, body = await st.storage.open(check_key(key))
    return StreamingResponse(
        body,
        media_type="application/octet-stream",
        headers={"Content-Length": str(info.size)},
    )


@router.delete(
    "/{key:objkey}",
    status_code=204,
    summary="Delete an object (idempotent: a missing key is not an error)",
    responses={204: {"description": "Deleted, or was not there."}, **errors.responses(400)},
)
async def delete_object(key: Key, st: State = Depends(state)) -> Response:
    await st.storage.delete(check_key(key))
    return Response(status_code=204)
