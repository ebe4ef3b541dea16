"""The MCP server for AI assistants: four read-only tools over the gateway's HTTP API.

- ``search_workers``: semantic search in a vector index, optionally filtered by a SQL
  predicate over the index's dataset; each hit with its row and snippet when the gateway
  sends them.
- ``run_sql``: one SELECT (``POST /v1/sql``: the gateway's sandbox and row cap).
- ``list_datasets`` / ``describe_dataset``: the catalog.

Every tool goes through :class:`lakehouse.client.http.Client` (a new one from
``client_factory`` per call), so it answers exactly what an HTTP client of the gateway gets;
a :class:`GatewayError` reaches the assistant as a tool error with the gateway's one-line
reason (DuckDB's message, ``not found: ...``). Served over stdio by ``lakehouse mcp`` and
over streamable HTTP at the gateway's ``/mcp``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from lakehouse import __version__
from lakehouse.client.http import Client, GatewayError
from lakehouse.client.render import SIMILARITY_METRICS, score
from schemas.catalog import ColumnSpec
from schemas.query import SqlResult
from schemas.subjects import Name
from schemas.vectors import Snippet

ClientFactory = Callable[[], Client]
ToolFn = TypeVar("ToolFn", bound=Callable[..., Awaitable[Any]])

NAME = "lakehouse"
INSTRUCTIONS = """\
Lakehouse holds tabular datasets (CSV ingested as Parquet), queryable with DuckDB SQL, and
vector indexes over some of them for semantic search. Start with list_datasets (or
describe_dataset) to learn the tables and columns; use search_workers for meaning-based
search (optionally narrowed with a SQL predicate over the index's dataset) and run_sql for
exact questions (counts, filters, joins). Every tool is read-only."""

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


# ---- what the tools answer ------------------------------------------------------------
class SearchHit(BaseModel):
    id: str = Field(description="Item id (the value of the index's id column).")
    distance: float = Field(description="Distance to the query (smaller is closer).")
    score: float | None = Field(
        None,
        description="Similarity, 1 - distance, on cosine and ip indexes (higher is closer); "
        "null on l2 indexes.",
    )
    row: dict[str, Any] | None = Field(
        None, description="The hit's row of the index's dataset (long text columns left out)."
    )
    snippet: Snippet | None = Field(None, description="Where the row's long text matches.")
    terms: list[str] | None = Field(None, description="The query's words found in the row.")
    metadata: dict[str, Any] | None = Field(None, description="Metadata stored with the item.")


class SearchResult(BaseModel):
    index: str = Field(description="The vector index searched.")
    dataset: str | None = Field(description="The dataset its items come from (filters read it).")
    hits: list[SearchHit] = Field(description="Closest first.")
    filter_matches: int | None = Field(description="Rows the filter matched (null: no filter).")
    partial: bool = Field(description="True when some partition did not answer in time.")


class Dataset(BaseModel):
    name: str = Field(description="Dataset name; also its table name in SQL.")
    row_count: int
    revision: int = Field(description="+1 on every change.")
    updated_at: str | None = Field(None, description="Last change (UTC, ISO 8601).")
    columns: list[ColumnSpec] = Field(description="In header order.")


class Datasets(BaseModel):
    datasets: list[Dataset]


class Revision(BaseModel):
    revision: int
    type: str = Field(description="registered or deleted.")
    at: str = Field(description="When (UTC, ISO 8601).")
    row_count: int | None = Field(None, description="Rows after this change.")


class DatasetDescription(Dataset):
    created_at: str | None = Field(None, description="First registration (UTC, ISO 8601).")
    vector_indexes: list[str] = Field(
        description="Vector indexes over this dataset (search_workers can use them)."
    )
    history: list[Revision] = Field(description="Every revision, oldest first.")


# ---- the server ----------------------------------------------------------------------
def build_server(client_factory: ClientFactory, *, name: str = NAME) -> MCPServer:
    """An :class:`MCPServer` with the four tools, each calling the gateway through a client
    from ``client_factory`` (one per call, closed after it)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    server: MCPServer = MCPServer(name, version=__version__, instructions=INSTRUCTIONS)
    # MCPServer() calls logging.basicConfig (a rich handler on the root logger, level INFO);
    # the process hosting it (the CLI, the gateway) owns its logging.
    root.setLevel(level)
    root.handlers[:] = handlers

    def tool(title: str) -> Callable[[ToolFn], ToolFn]:
        def add(fn: ToolFn) -> ToolFn:
            description = " ".join((fn.__doc__ or "").split())  # one paragraph
            server.add_tool(fn, title=title, description=description, annotations=READ_ONLY)
            return fn

        return add

    @asynccontextmanager
    async def gateway() -> AsyncIterator[Client]:
        try:
            async with client_factory() as gw:
                yield gw
        except GatewayError as exc:
            raise ToolError(exc.line()) from None

    @tool("Semantic search")
    async def search_workers(
        text: Annotated[
            str,
            Field(
                min_length=1,
                description="What to look for, in plain words "
                "(e.g. 'electrician with industrial wiring experience').",
            ),
        ],
        filters: Annotated[
            str | None,
            Field(
                description="Optional SQL predicate over the index's dataset; only matching "
                "rows are searched (e.g. \"state = 'IL' AND reliability >= 0.9\").",
            ),
        ] = None,
        k: Annotated[int, Field(ge=1, le=100, description="Hits wanted.")] = 10,
        index: Annotated[
            Name | None,
            Field(
                description="Vector index to search; default the first index that has a dataset.",
            ),
        ] = None,
    ) -> SearchResult:
        """Semantic search: the rows of a dataset whose text is closest in meaning to `text`,
        optionally narrowed by a SQL predicate over that dataset. Each hit has its id,
        distance and score, and (when the gateway provides them) its row and a snippet of
        its long text with the query's words marked."""
        async with gateway() as gw:
            spec = choose_index(await gw.indexes(), index)
            body = await gw.search(spec["name"], text=text, k=k, filter=filters or None)
        metric = spec.get("metric", "cosine")
        scored = metric in SIMILARITY_METRICS
        hits = [
            SearchHit(
                id=str(h["id"]),
                distance=h["distance"],
                score=round(score(h, metric), 6) if scored else None,
                row=h.get("row"),
                snippet=h.get("snippet"),
                terms=h.get("terms"),
                metadata=h.get("metadata"),
            )
            for h in body.get("hits", [])
        ]
        return SearchResult(
            index=spec["name"],
            dataset=spec.get("dataset"),
            hits=hits,
            filter_matches=body.get("filter_matches"),
            partial=bool(body.get("partial")),
        )

    @tool("Run SQL")
    async def run_sql(
        sql: Annotated[
            str,
            Field(
                min_length=1,
                description="One SELECT statement (DuckDB dialect); each dataset is a table "
                "of its name (e.g. 'SELECT state, count(*) FROM workers GROUP BY state').",
            ),
        ],
    ) -> SqlResult:
        """Run one read-only SELECT over the datasets (DuckDB SQL, in the gateway's sandbox:
        no file or network access, a row cap — `truncated` says when it cut the result)."""
        async with gateway() as gw:
            out = await gw.sql(sql)
        return SqlResult.model_validate(out)

    @tool("List datasets")
    async def list_datasets() -> Datasets:
        """Every dataset: name (its SQL table name), row count, revision and columns."""
        async with gateway() as gw:
            manifests = await gw.datasets()
        return Datasets(datasets=[summary(m) for m in manifests])

    @tool("Describe a dataset")
    async def describe_dataset(
        name: Annotated[Name, Field(description="Dataset name (see list_datasets).")],
    ) -> DatasetDescription:
        """One dataset: its columns with types, row count, current revision, the vector
        indexes over it, and its revision history (oldest first)."""
        async with gateway() as gw:
            manifest = await gw.dataset(name)
            events = await gw.history(name)
            indexes = await gw.indexes()
        return DatasetDescription(
            **summary(manifest).model_dump(),
            created_at=manifest.get("created_at"),
            vector_indexes=[i["name"] for i in indexes if i.get("dataset") == name],
            history=[
                Revision(
                    revision=e["revision"],
                    type=e["type"],
                    at=e["at"],
                    row_count=(e.get("manifest") or {}).get("row_count"),
                )
                for e in events
            ],
        )

    return server


def choose_index(indexes: list[dict[str, Any]], wanted: str | None) -> dict[str, Any]:
    """The spec of ``wanted``, or of the first index that has a dataset (else the first)."""
    if wanted is not None:
        for spec in indexes:
            if spec.get("name") == wanted:
                return spec
        raise ToolError(f"not found: vector index {wanted!r}")
    with_dataset = [s for s in indexes if s.get("dataset")]
    if with_dataset or indexes:
        return (with_dataset or indexes)[0]
    raise ToolError("not found: no vector index yet (ingest with embed_index=... to make one)")


def summary(manifest: dict[str, Any]) -> Dataset:
    return Dataset(
        name=manifest["name"],
        row_count=manifest.get("row_count", 0),
        revision=manifest.get("revision", 0),
        updated_at=manifest.get("updated_at"),
        columns=[ColumnSpec.model_validate(c) for c in manifest.get("columns", [])],
    )
