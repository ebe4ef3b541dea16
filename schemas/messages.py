"""Pydantic models for messages owned by the shared runtime (health, dead letters).

Every payload carries ``v``, its schema version; readers reject versions they do not know.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    """Base of every message: versioned, unknown fields ignored for forward compatibility."""

    model_config = ConfigDict(extra="ignore")

    v: int = Field(1, description="Schema version of this payload.", examples=[1])


class HealthReply(Message):
    """What each live process answers on ``lakehouse.health.ping``."""

    kind: str = Field(description="Worker kind, or 'gateway'.", examples=["ingest"])
    instance: str = Field(description="Unique id of this process.", examples=["ingest-4121-a1b2"])
    pid: int = Field(description="Operating-system process id.", examples=[4121])
    started_at: datetime = Field(description="When the process started (UTC).")
    in_flight: int = Field(0, description="Messages being handled right now.", examples=[1])
    handled: int = Field(0, description="Messages handled since start.", examples=[42])


class DeadLetter(Message):
    """A message that could not be handled, published on ``lakehouse.dlq.<kind>``."""

    kind: str = Field(description="Worker kind that gave up.", examples=["ingest"])
    subject: str = Field(description="Original subject.", examples=["lakehouse.ingest.requests"])
    stream: str = Field(description="Stream the message came from.", examples=["LAKEHOUSE_INGEST"])
    stream_seq: int = Field(description="Sequence of the message in its stream.", examples=[17])
    deliveries: int = Field(description="How many times it was delivered.", examples=[5])
    headers: dict[str, str] = Field(default_factory=dict, description="Original headers.")
    payload_b64: str | None = Field(
        None, description="Original payload, base64, when it fits inline.", examples=["eyJ9"]
    )
    payload_key: str | None = Field(
        None,
        description="Storage key holding the original payload when it was too large to inline.",
        examples=["_dlq/ingest/17.bin"],
    )
    error: str = Field(description="Why it failed.", examples=["row 3: expected 4 fields, got 5"])
    permanent: bool = Field(description="True when the handler declared the failure permanent.")
    failed_at: datetime = Field(description="When it was dead-lettered (UTC).")
