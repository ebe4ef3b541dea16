"""SQL requests (``lakehouse.query.sql``, request/reply)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from schemas.messages import Message


class SqlRequest(Message):
    sql: str = Field(description="One SELECT statement.", examples=["SELECT count(*) FROM workers"])
    format: Literal["json", "arrow"] = Field("json", description="json, or Arrow IPC stream.")
    min_catalog_seq: int = Field(
        0, description="Wait (bounded) until the catalog events up to this sequence are applied."
    )
    max_rows: int | None = Field(None, description="Row cap; default from settings.")
    timeout: float | None = Field(None, description="Statement timeout in seconds.")
    as_of: dict[str, int] | None = Field(
        None,
        description="Time travel: read these datasets at these revisions (the others current). "
        "An unknown revision, or one whose objects gc collected, is a 400 naming the "
        "revisions available.",
        examples=[{"workers": 3}],
    )


class SqlColumn(BaseModel):
    name: str = Field(description="Column name.", examples=["n"])
    type: str = Field(description="DuckDB type.", examples=["BIGINT"])


class SqlResult(BaseModel):
    """The JSON reply to a ``format="json"`` request (``format="arrow"``: an Arrow IPC stream,
    schema metadata ``lakehouse.truncated``)."""

    columns: list[SqlColumn] = Field(description="Result columns, in order.")
    rows: list[list[Any]] = Field(description="Rows, each a list of JSON values.")
    row_count: int = Field(description="Rows returned.", examples=[1])
    truncated: bool = Field(description="True when the row cap cut the result.")


class RowsRequest(Message):
    """``lakehouse.query.rows`` (request/reply): rows of a dataset by id — what a search
    answer shows of each hit. Served from a per-dataset in-memory copy in the query worker
    (built on first use, dropped when the dataset changes)."""

    dataset: str = Field(description="Dataset name.", examples=["workers"])
    id_column: str = Field(description="Column holding the ids.", examples=["worker_id"])
    ids: list[str] = Field(max_length=10_000, description="Ids wanted (string form).")
    min_catalog_seq: int = Field(0, description="As in SqlRequest (read-your-writes).")


class RowsReply(BaseModel):
    columns: list[SqlColumn] = Field(description="Every column of the dataset, in order.")
    long: list[str] = Field(description="Long text columns (left out of a hit's row by default).")
    rows: dict[str, list[Any]] = Field(description="Each found id's row, values as in SqlResult.")
