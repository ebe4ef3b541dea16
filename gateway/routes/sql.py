"""``POST /v1/sql``: one SELECT over the registered datasets (request/reply to a query worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from gateway import errors
from gateway.routes import JsonRoute, state
from lakehouse.platform.rpc import call
from schemas import subjects as S
from schemas.query import SqlRequest, SqlResult

if TYPE_CHECKING:
    from gateway.app import State

router = APIRouter(tags=["sql"], route_class=JsonRoute)

ARROW = "application/vnd.apache.arrow.stream"


class SqlBody(BaseModel):
    sql: str = Field(
        min_length=1, description="One SELECT statement.", examples=["SELECT count(*) FROM workers"]
    )
    as_of: dict[S.Name, Annotated[int, Field(ge=1)]] | None = Field(
        None,
        description="Time travel: read these datasets at these revisions, the others current "
        "(`GET /v1/catalog/{name}/history` lists revisions; gc keeps the objects of the last "
        "`catalog.keep_revisions`). An unknown or collected revision is a 400 naming the "
        "revisions available.",
        examples=[{"workers": 3}],
    )


@router.post(
    "/v1/sql",
    summary="Run one SELECT (JSON, or Arrow IPC with Accept: application/vnd.apache.arrow.stream)",
    responses={
        200: {
            "model": SqlResult,
            "description": "The result: JSON, or an Arrow IPC stream when asked for.",
            "content": {
                "application/json": {
                    "example": {
                        "columns": [{"name": "n", "type": "BIGINT"}],
                        "rows": [[5]],
                        "row_count": 1,
                        "truncated": False,
                    }
                },
                ARROW: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **errors.responses(
            400,
            403,
            413,
            503,
            504,
            _400="Invalid request, SQL error (DuckDB's message) or more than one statement; an "
            "`as_of` revision unknown or collected (naming the revisions available).",
            _403="Not a SELECT, or file/URL access outside the datasets.",
            _413="The result is over `limits.max_sql_result_bytes` (256 MiB unless configured), "
            "JSON or Arrow as asked: the query worker stops building it there and answers this "
            "(`error`: `limit exceeded`, `detail` naming the limit); select fewer rows or "
            "columns.",
            _504="Statement timeout (`query.timeout`); the statement was interrupted.",
        ),
    },
)
async def sql(body: SqlBody, request: Request, st: State = Depends(state)) -> Response:
    arrow = ARROW in request.headers.get("accept", "")
    raw = await run_sql(st, body.sql, arrow=arrow, as_of=body.as_of)
    return Response(raw, media_type=ARROW if arrow else "application/json")


async def run_sql(
    st: State, sql: str, *, arrow: bool = False, as_of: dict[str, int] | None = None
) -> bytes:
    """One statement through a query worker: JSON (``SqlResult``) or an Arrow IPC stream."""
    req = SqlRequest(
        sql=sql,
        format="arrow" if arrow else "json",
        min_catalog_seq=st.catalog_seq,
        as_of=as_of or None,
    )
    qs = st.settings.query
    return await call(
        st.require_nats(),
        S.QUERY_SQL,
        req,
        timeout=qs.timeout + qs.read_your_writes_wait + 5,
        what="query",
    )
