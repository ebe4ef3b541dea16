"""``GET /asyncapi.json`` and ``GET /asyncapi``: the NATS contract (AsyncAPI 3) that upstream
systems publish against, generated from ``schemas/`` (see :mod:`schemas.asyncapi`)."""

from __future__ import annotations

import functools
import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from gateway.routes import JsonRoute

router = APIRouter(tags=["contract"], route_class=JsonRoute)


class _Spec:
    """The post-processed document in the shape FastStream's HTML page renders."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.title = str(doc["info"]["title"])

    def to_jsonable(self) -> Any:
        return self.doc

    def to_json(self) -> str:
        # Embedded in a <script>: never let a description close it.
        return json.dumps(self.doc).replace("</", "<\\/")

    def to_yaml(self) -> str:
        return self.to_json()  # JSON is YAML


@functools.cache
def _document() -> tuple[bytes, str]:
    """The document and its HTML page, built once per process (FastStream is imported on the
    first request, not at gateway start)."""
    from faststream.specification import get_asyncapi_html

    from schemas.asyncapi import document

    spec = _Spec(document())
    body = json.dumps(spec.doc, indent=2).encode()
    return body, get_asyncapi_html(spec, try_it_out_path=None)


@router.get(
    "/asyncapi.json",
    summary="The NATS contract as an AsyncAPI 3 document",
    response_class=Response,
    responses={
        200: {
            "description": "AsyncAPI 3.0.0 document of every NATS subject: channels with their "
            "parameters, payload schemas, and the reply of every request/reply subject.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def asyncapi_json() -> Response:
    body, _ = _document()
    return Response(body, media_type="application/json")


@router.get(
    "/asyncapi",
    summary="The NATS contract, rendered",
    response_class=HTMLResponse,
    responses={
        200: {
            "description": "An HTML page rendering `/asyncapi.json` with the AsyncAPI React "
            "component (a browser loads its script and styles from unpkg.com).",
            "content": {"text/html": {}},
        }
    },
)
async def asyncapi_html() -> HTMLResponse:
    _, html = _document()
    return HTMLResponse(html)
