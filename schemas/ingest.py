"""Ingest requests and job status (``lakehouse.ingest.requests``, ``lakehouse.jobs.<id>``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from schemas.catalog import Mode, SchemaChange, SchemaRule
from schemas.messages import Message
from schemas.subjects import Name

JobId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$", min_length=1, max_length=64)
]
"""A job id: 1-64 of ``[A-Za-z0-9_-]`` (a subject token of ``lakehouse.jobs.<job_id>``)."""


class AutoEmbed(BaseModel):
    """Embed every row after the dataset registers (upsert by id)."""

    index: Name = Field(description="Vector index; created (384-d, cosine) if missing.")
    id_column: str = Field(
        min_length=1, description="Column holding each row's item id.", examples=["worker_id"]
    )
    text_template: str = Field(
        min_length=1,
        description="Python format string over the row's columns.",
        examples=["{role} in {city}, {state}. Skills: {skills}. {resume_text}"],
    )


class IngestRequest(Message):
    """Turn a CSV already in storage into a registered dataset (claim check: the CSV never
    travels inline). Publish with ``Nats-Msg-Id: <job_id>``."""

    job_id: JobId = Field(
        description="Unique job id; status streams on lakehouse.jobs.<job_id>.",
        examples=["5b1e0c8a9f2d4c7e8a1b2c3d4e5f6a7b"],
    )
    name: Name = Field(description="Dataset name.", examples=["workers"])
    source_key: str = Field(
        description="Storage key of the uploaded CSV.", examples=["staging/5b1e0c8a.csv"]
    )
    mode: Mode = Field("replace", description="replace (default), append, or upsert (by `key`).")
    key: str | None = Field(
        None,
        min_length=1,
        description="upsert: the key column. Rows whose key exists replace the current row; "
        "new keys are added. Keys must be unique and non-empty in the upload.",
        examples=["worker_id"],
    )
    delete_missing: bool = Field(
        False, description="upsert: also delete the rows whose key is absent from the upload."
    )
    schema_rule: SchemaRule = Field(
        "strict",
        description="strict (the dataset's columns), evolve (add columns, widen types) or any "
        "(evolve and drop the columns the upload lacks).",
    )
    delete_source: bool = Field(
        False,
        description="Delete the CSV once the job ends: the gateway's staged uploads; only a "
        "key under `staging/` is ever deleted.",
    )
    embed: AutoEmbed | None = Field(
        None,
        description="Also embed the rows into an index (an upsert embeds only new rows and "
        "rows whose text changed, and deletes removed keys from the index).",
    )
    source_parts: bool = Field(
        False,
        description="`source_key` is the prefix (ending in `/`) of an upload still arriving: "
        "parts `000000`, `000001`, ... in order, then `end` (JSON: `parts` and `bytes`, or "
        "`error` when the upload failed). The job converts the parts as they land. The "
        "gateway stages large uploads this way; other publishers send one CSV object.",
    )

    @model_validator(mode="after")
    def _upsert_fields(self) -> IngestRequest:
        if self.source_parts and not self.source_key.endswith("/"):
            raise ValueError("source_parts needs source_key to be a prefix ending in '/'")
        if self.mode == "upsert" and self.key is None:
            raise ValueError("mode=upsert needs a key column (key)")
        if self.mode != "upsert" and (self.key is not None or self.delete_missing):
            raise ValueError("key and delete_missing apply to mode=upsert only")
        return self


class EmbedCounts(BaseModel):
    """What auto-embed did for an ingest."""

    texts_embedded: int = Field(description="Rows sent to the model (new or text changed).")
    unchanged_skipped: int = Field(
        description="Rows of the upload not embedded again: their text is unchanged."
    )
    deleted: int = Field(description="Keys deleted from the index (rows removed).")


class IngestResult(BaseModel):
    """What a finished ingest returns (the seed's D4 response plus catalog details)."""

    job_id: str = Field("", description="The ingest job (GET /v1/jobs/{job_id}).")
    dataset_id: str = Field(description="UUIDv5 of the name.")
    name: str = Field(description="Dataset name.", examples=["workers"])
    row_count: int = Field(description="Rows in this ingest's file.", examples=[500_000])
    existing: bool = Field(description="True when the dataset already existed.")
    fingerprint: str = Field(description="Schema fingerprint.")
    key: str = Field(description="Storage key of the Parquet object written.")
    mode: Mode = Field(description="replace, append or upsert.")
    inserted: int = Field(0, description="Rows added to the dataset.")
    updated: int = Field(0, description="Rows replaced (upsert).")
    deleted: int = Field(0, description="Rows removed (replace: the old rows; upsert).")
    schema_change: SchemaChange | None = Field(None, description="Columns added/widened/dropped.")
    revision: int = Field(description="Catalog revision after this ingest.", examples=[1])
    dataset_rows: int = Field(description="Rows in the whole dataset after this ingest.")
    widened: list[str] = Field(
        default_factory=list, description="Columns widened to string after the sample."
    )
    catalog_seq: int = Field(description="Catalog event sequence (read-your-writes token).")
    embed_index: str | None = Field(None, description="Index the rows are being embedded into.")
    embed_batches: int = Field(0, description="Embed requests published (progress: GET job).")
    embed: EmbedCounts | None = Field(None, description="Auto-embed counts.")


class JobError(BaseModel):
    status: int = Field(description="HTTP status the failure maps to.", examples=[400])
    error: str = Field(description="Short error.", examples=["invalid CSV"])
    detail: Any = Field(None, description="What went wrong, naming row/column where possible.")


class JobStatus(Message):
    """One update on ``lakehouse.jobs.<job_id>``; the last one is the job's state."""

    job_id: str = Field(description="Job id.")
    kind: str = Field("ingest", description="What kind of job.")
    state: Literal["queued", "running", "succeeded", "failed"] = Field(description="State.")
    progress_rows: int = Field(0, description="Rows processed so far.")
    result: IngestResult | None = Field(None, description="Set when succeeded.")
    error: JobError | None = Field(None, description="Set when failed.")
    updated_at: datetime = Field(description="When this update was made (UTC).")

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")

    @staticmethod
    def job_id_of(request: bytes) -> str | None:
        """The valid ``job_id`` of a request payload that may be invalid otherwise."""
        try:
            return JOB_ID.validate_python(json.loads(request)["job_id"])
        except (ValueError, TypeError, KeyError, ValidationError):
            return None


JOB_ID: TypeAdapter[str] = TypeAdapter(JobId)
"""Validates a :data:`JobId` on its own."""


class EmbedProgress(BaseModel):
    """``lakehouse.jobs.<job_id>.embed.<batch_id>``: one auto-embed batch of a job is done."""

    batch_id: str = Field(description="The EmbedRequest's batch_id.", examples=["5b1e-0"])
    items: int = Field(description="Items embedded and published.", examples=[500])
    failed: int = Field(description="Items the model rejected (dead-lettered).", examples=[0])
