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
Mode = Literal["replace", "append", "upsert"]
"""How an ingest changes a dataset: replace its rows, append to them, or upsert by a key."""
Change = Literal["replace", "append", "upsert", "compact"]
"""What a registration did (``compact``: the same rows rewritten into fewer objects)."""
SchemaRule = Literal["strict", "evolve", "any"]
"""How an ingest may change a dataset's columns: ``strict`` (the same names and types),
``evolve`` (add columns, widen int64 -> float64 -> string and bool -> string) or ``any``
(evolve, and drop the columns an upload lacks: a rename is a drop plus an add)."""
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
    revision: Int = Field(
        0,
        ge=0,
        description="Revision that added it (set by the catalog). A delete set applies to the "
        "data objects of lower revisions.",
    )
    fingerprint: str | None = Field(
        None, description="Schema it was written with, when not the manifest's (evolution)."
    )


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
    key: str | None = Field(
        None, description="Key column of the last upsert (rows are unique by it).", examples=["id"]
    )
    deletes: list[ObjectRef] = Field(
        default_factory=list,
        description="Delete sets: Parquet objects of one string column `key`; a row of a data "
        "object is gone when its key is in a delete set of a higher revision. `lakehouse "
        "compact` rewrites the rows without them.",
    )

    @property
    def stored(self) -> list[ObjectRef]:
        """Everything this revision reads from storage: data objects, then delete sets."""
        return [*self.objects, *self.deletes]


class SchemaChange(BaseModel):
    added: list[str] = Field(default_factory=list, description="New columns (null in older rows).")
    widened: dict[str, str] = Field(
        default_factory=dict, description="Column -> its new type.", examples=[{"rate": "float64"}]
    )
    dropped: list[str] = Field(default_factory=list, description="Columns removed (schema=any).")


class ChangeSummary(BaseModel):
    """What one revision did to a dataset's rows and columns."""

    mode: Change = Field(description="replace, append, upsert or compact.")
    inserted: Int = Field(0, ge=0, description="Rows added.")
    updated: Int = Field(0, ge=0, description="Rows replaced by a new version (upsert).")
    deleted: Int = Field(0, ge=0, description="Rows removed.")
    schema_change: SchemaChange | None = Field(None, description="Set when the columns changed.")


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
    mode: Change = Field(
        "replace",
        description="replace: objects replaced; append: added; upsert: objects and `deletes` "
        "added on top of `base_revision`; compact: the same rows in new objects.",
    )
    schema_rule: SchemaRule = Field(
        "strict", description="strict, evolve or any: how `columns` may differ from the dataset's."
    )
    key: str | None = Field(None, description="upsert: the key column.")
    deletes: list[ObjectRef] = Field(default_factory=list, description="upsert: delete sets.")
    base_revision: Int | None = Field(
        None,
        ge=0,
        description="upsert/compact: the revision the change was computed from (0: none); the "
        "register is a 409 `dataset changed` when the dataset is no longer at it.",
    )
    change: ChangeSummary | None = Field(
        None, description="upsert/compact: rows inserted/updated/deleted, as computed."
    )


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
    change: ChangeSummary | None = Field(
        None, description="Rows inserted/updated/deleted and schema change (registered only)."
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


class CompactRequest(Message):
    """``lakehouse.catalog.compact``: rewrite a dataset's rows into one object per ~122,880
    rows without its delete sets (the rows do not change; a new revision records it)."""

    name: Name = Field(description="Dataset name.", examples=["workers"])


class ListRequest(Message):
    """``lakehouse.catalog.list`` request; the body is ignored (the gateway sends ``{}``)."""
