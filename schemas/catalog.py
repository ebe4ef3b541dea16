"""Catalog messages: register requests, manifests, and the change events of
``lakehouse.catalog.events.<dataset>`` (the source of truth)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas.messages import Bool, Int, Message
from schemas.subjects import Name

DATASET_NAMESPACE = uuid.UUID("a8f3c1d2-4e5b-5a6c-9d8e-7f0a1b2c3d4e")

ColumnType = Literal["int64", "float64", "bool", "string"]
Mode = Literal["replace", "append"]
INT64_MAX = 2**63 - 1  # sizes and row counts are int64 in Parquet and DuckDB


def dataset_id(name: str) -> str:
    """Deterministic id: UUIDv5 of the name in the project's namespace."""
    return str(uuid.uuid5(DATASET_NAMESPACE, name))


class ColumnSpec(BaseModel):
    name: str = Field(
        min_length=1, description="Column name (from the CSV header).", examples=["worker_id"]
    )
    type: ColumnType = Field(description="Inferred type.", examples=["int64"])
    nullable: Bool = Field(description="True when the column holds nulls.", examples=[False])


class ObjectRef(BaseModel):
    key: str = Field(
        min_length=1,
        description="Storage key of an immutable Parquet object.",
        examples=["datasets/workers/3f2a.../0c1d....parquet"],
    )
    size: Int = Field(ge=0, le=INT64_MAX, description="Bytes.", examples=[74_000_000])
    rows: Int = Field(ge=0, le=INT64_MAX, description="Rows in the object.", examples=[500_000])


class Manifest(BaseModel):
    dataset_id: str = Field(description="UUIDv5 of the name.", examples=[dataset_id("workers")])
    name: Name = Field(description="Dataset name; also its SQL view name.", examples=["workers"])
    schema_fingerprint: str = Field(
        description="SHA-256 over (name, type) in header order.", examples=["3f2a9c..."]
    )
    columns: list[ColumnSpec] = Field(description="Columns in header order.")
    objects: list[ObjectRef] = Field(description="Parquet objects holding the rows.")
    created_at: datetime = Field(description="First registration (UTC).")
    updated_at: datetime = Field(description="Last change (UTC).")
    row_count: int = Field(description="Rows over all objects.", examples=[500_000])
    revision: int = Field(description="Per-dataset revision, +1 on every change.", examples=[1])
    last_request: str | None = Field(
        None, description="Id of the request that made this revision (idempotency)."
    )


class RegisterRequest(Message):
    """``lakehouse.catalog.register``: add or replace a dataset's objects."""

    request_id: str = Field(
        description="Idempotency key (e.g. the ingest job id): a repeat changes nothing.",
        examples=["job-5b1e..."],
    )
    name: Name = Field(description="Dataset name.", examples=["workers"])
    schema_fingerprint: str = Field(description="Fingerprint of the columns.")
    columns: list[ColumnSpec] = Field(min_length=1, description="Columns in header order.")
    objects: list[ObjectRef] = Field(description="Objects to register.")
    mode: Mode = Field("replace", description="replace: objects replaced; append: added.")


class CatalogEvent(Message):
    """One change, on ``lakehouse.catalog.events.<name>``; the stream keeps every one."""

    type: Literal["registered", "deleted"] = Field(description="What happened.")
    name: str = Field(description="Dataset name.", examples=["workers"])
    revision: int = Field(description="Revision this event creates.", examples=[3])
    at: datetime = Field(description="When (UTC).")
    manifest: Manifest | None = Field(None, description="The new manifest (registered only).")
    replaced_objects: list[ObjectRef] = Field(
        default_factory=list, description="Objects no longer referenced after this change."
    )


class RegisterReply(BaseModel):
    """Reply to a register: the manifest, whether it existed, and the event's stream sequence."""

    manifest: Manifest = Field(description="The dataset after the change.")
    existing: bool = Field(description="True when the dataset already existed.")
    catalog_seq: int = Field(
        description="Stream sequence of the catalog event; query workers wait for it.",
        examples=[42],
    )


class NameRequest(Message):
    """Request naming one dataset (get, history, delete)."""

    name: Name = Field(description="Dataset name.", examples=["workers"])
    request_id: str | None = Field(None, description="Idempotency key for deletes.")


class DatasetList(BaseModel):
    """Reply to ``lakehouse.catalog.list``: every registered dataset's manifest."""

    datasets: list[Manifest] = Field(description="Current manifests, by name.")
    count: int = Field(description="How many.", examples=[3])


class HistoryEntry(CatalogEvent):
    seq: int = Field(description="Stream sequence of the event.", examples=[42])


class History(BaseModel):
    """Reply to ``lakehouse.catalog.history``: every event of one dataset, oldest first."""

    name: Name = Field(description="Dataset name.", examples=["workers"])
    events: list[HistoryEntry] = Field(description="Every revision's event.")


class DeleteReply(BaseModel):
    """Reply to ``lakehouse.catalog.delete``."""

    name: Name = Field(description="Dataset name.", examples=["workers"])
    deleted: Literal[True] = Field(description="Always true.")
    catalog_seq: int = Field(
        description="Stream sequence of the tombstone event (read-your-writes token).",
        examples=[43],
    )


class ListRequest(Message):
    """``lakehouse.catalog.list`` request; the body is ignored (the gateway sends ``{}``)."""
