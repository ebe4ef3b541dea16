"""SQL requests (``lakehouse.query.sql``, request/reply)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.messages import Message


class SqlRequest(Message):
    sql: str = Field(description="One SELECT statement.", examples=["SELECT count(*) FROM workers"])
    format: Literal["json", "arrow"] = Field("json", description="json, or Arrow IPC stream.")
    min_catalog_seq: int = Field(
        0, description="Wait (bounded) until the catalog events up to this sequence are applied."
    )
    max_rows: int | None = Field(None, description="Row cap; default from settings.")
    timeout: float | None = Field(None, description="Statement timeout in seconds.")
