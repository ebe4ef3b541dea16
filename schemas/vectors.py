"""Vector index messages: definitions, embed requests, search scatter/gather.

Vector batches on ``lakehouse.vectors.<index>.<partition>`` are binary: an Arrow IPC stream
with columns ``id`` (string), ``op`` (string: "upsert" | "delete"), ``vector``
(fixed_size_list<float32>[dim], null for deletes) and ``metadata`` (string, JSON object or
null). The stream is uncompressed and ends with its end-of-stream marker; ``op`` is exactly
"upsert" or "delete"; an upsert's vector is finite (no NaN or infinity). Anything else is
refused whole (dead-lettered with the reason). See :mod:`lakehouse.vectors.batches` for the
encoder/decoder.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel

from schemas.messages import Int, Message
from schemas.subjects import Name

Metric = Literal["cosine", "l2", "ip"]


class IndexDefinition(BaseModel):
    """What whoever creates an index chooses (``POST /v1/vectors/indexes`` takes exactly this)."""

    name: Name = Field(description="Index name.", examples=["workers"])
    dim: Int = Field(ge=1, le=8192, description="Vector dimension.", examples=[384])
    metric: Metric = Field("cosine", description="cosine, l2 or ip (inner product).")
    partitions: Int = Field(4, ge=1, le=256, description="Fixed at creation.", examples=[4])
    M: Int = Field(16, ge=2, le=128, description="HNSW graph degree.")
    ef_construction: Int = Field(200, ge=8, le=4096, description="HNSW build beam width.")
    ef_search: Int = Field(64, ge=1, le=4096, description="Default search beam width.")
    model: str | None = Field(
        None,
        description="Embedding model for text items/queries (None: vectors only).",
        examples=["all-MiniLM-L6-v2"],
    )
    dataset: Name | None = Field(None, description="Dataset the items come from (for filters).")
    id_column: str | None = Field(
        None, min_length=1, description="Column of ``dataset`` holding item ids."
    )
    text_template: str | None = Field(
        None,
        min_length=1,
        description="Format string the dataset's rows were embedded with (auto-embed sets it); "
        "a search `like` an item renders it over that item's row.",
        examples=["{role} in {city}, {state}. Skills: {skills}."],
    )


class IndexSpec(Message, IndexDefinition):
    """An index definition, the last message on ``lakehouse.indexes.<name>``."""

    deleted: bool = Field(False, description="True on the tombstone of a deleted index.")
    created_at: datetime | None = Field(None, description="When it was created (UTC).")


class TextItem(BaseModel):
    id: str = Field(description="Item id (upsert key).", examples=["worker-17"])
    text: str = Field(description="Text to embed.", examples=["Electrician in Peoria, IL"])
    metadata: dict[str, Any] | None = Field(None, description="Returned with search hits.")


class EmbedRequest(Message):
    """``lakehouse.embed.requests.<index>``: texts to embed and add (upsert by id)."""

    batch_id: str = Field(description="Deterministic batch id (dedupe).", examples=["job1-0"])
    index: Name = Field(description="Target index.", examples=["workers"])
    items: list[TextItem] = Field(description="Items to embed.")
    job_id: str | None = Field(
        None, description="Job to report progress on: lakehouse.jobs.<job_id>.embed.<batch_id>."
    )


class EmbedText(Message):
    """``lakehouse.embed.text`` request: query-time embedding (cached)."""

    texts: list[str] = Field(description="Texts to embed.", examples=[["forklift OSHA-30"]])
    model: str | None = Field(None, description="Model; default the configured one.")


class SearchRequest(Message):
    """``lakehouse.search.<index>`` scatter request; every partition owner answers.

    Binary form (what the gateway sends): the body is the query vector as little-endian
    float32 bytes and the ``Lakehouse-Query`` header holds the other fields as JSON
    (``{"k": 10, "ef": null}``) — no float text to print or parse on either side. A filtered
    query adds ``"filter": "<digest>"`` to the header and appends the matching ids to the
    body: one Arrow IPC stream, one record batch (string column ``id``) per partition in
    partition order, the digest being BLAKE2b-128 of those bytes (workers cache the ids'
    labels under it)."""

    vector: list[float] = Field(description="Query vector (already embedded).")
    k: int = Field(10, ge=1, le=10_000, description="Hits wanted.")
    ef: int | None = Field(None, description="Beam width; default the index's ef_search.")
    op: Literal["search", "stats", "ids"] = Field(
        "search", description="search; stats; ids (count and digest of the live id set)."
    )
    allowed_ids: list[str] | None = Field(
        None, description="Only these ids may be returned (a resolved filter)."
    )


QUERY_HEADER = "Lakehouse-Query"


class Snippet(BaseModel):
    column: str = Field(description="The long-text column it comes from.")
    text: str = Field(description="About 240 characters of it, around the first query word.")
    marks: list[tuple[int, int]] = Field(
        description="[start, end) offsets in `text` of the query's words (for highlighting)."
    )


class Hit(BaseModel):
    id: str = Field(description="Item id.")
    distance: float = Field(description="Distance (smaller is closer).")
    metadata: dict[str, Any] | None = Field(None, description="Item metadata.")
    row: dict[str, Any] | None = Field(
        None,
        description="The item's row in the index's dataset (search answers on an index with "
        "`dataset`/`id_column`; null when the row is gone).",
    )
    snippet: Snippet | None = Field(None, description="The matched long text, marked.")
    terms: list[str] | None = Field(None, description="The words of a text query found in the row.")


class PartitionReply(BaseModel):
    partition: int = Field(description="Partition number.")
    owner: str = Field(description="Instance owning it.")
    hits: list[Hit] = Field(default_factory=list, description="Top hits of this partition.")
    took_ms: float = Field(0.0, description="Time spent in the partition.")
    count: int = Field(0, description="Live vectors in the partition.")
    covered_seq: int = Field(0, description="Last vectors-stream sequence applied.")
    memory_bytes: int = Field(0, description="Approximate index memory.")
    ids_digest: str | None = Field(
        None, description="op=ids: sha256 over the sorted live ids, one per line."
    )


class EmbedTextReply(BaseModel):
    """Reply to ``lakehouse.embed.text``: one vector per text, in order."""

    model: str = Field(description="Embedding model.", examples=["all-MiniLM-L6-v2"])
    dim: int = Field(description="Vector dimension.", examples=[384])
    vectors: list[list[float]] = Field(description="One vector per requested text.")


class SearchReply(RootModel[list[PartitionReply]]):
    """Reply of one vector worker to ``lakehouse.search.<index>``: one entry per partition of
    the index it owns (empty when it owns none)."""
