"""Pydantic models for messages owned by the shared runtime (health, dead letters).

Every payload carries ``v``, its schema version; readers reject versions they do not know.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictBool


def _json_number(value: Any) -> Any:
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be a JSON number")
    return value


Int = Annotated[int, BeforeValidator(_json_number)]
"""An integer as JSON Schema means it: a number without a fraction (``3``, ``3.0``), never
``true`` or ``"3"``, which pydantic's lax mode would coerce (the schema would not tell)."""
Float = Annotated[float, Strict()]
"""A number (``1`` or ``1.5``), never ``true`` or ``"1.5"`` (checked in pydantic-core: vectors
are long lists of these)."""
Bool = StrictBool
"""``true`` or ``false``, never ``1`` or ``"yes"``."""

STATUS_HEADER = "Lakehouse-Status"
"""On a request/reply error reply: its HTTP status (the body is an :class:`ErrorBody`)."""
PART_HEADER = "Lakehouse-Part"
"""``i/n`` on each part of a reply larger than the server's max_payload, in order."""


class Message(BaseModel):
    """Base of every message: versioned, unknown fields ignored for forward compatibility."""

    model_config = ConfigDict(extra="ignore")

    v: Int = Field(1, description="Schema version of this payload.", examples=[1])


class HealthReply(Message):
    """What each live process answers on ``lakehouse.health.ping``."""

    kind: str = Field(description="Worker kind, or 'gateway'.", examples=["ingest"])
    instance: str = Field(description="Unique id of this process.", examples=["ingest-4121-a1b2"])
    pid: int = Field(description="Operating-system process id.", examples=[4121])
    started_at: datetime = Field(description="When the process started (UTC).")
    in_flight: int = Field(0, description="Messages being handled right now.", examples=[1])
    handled: int = Field(0, description="Messages handled since start.", examples=[42])
    metrics_port: int | None = Field(
        None,
        description="Port of the process's Prometheus /metrics (None: not exported).",
        examples=[40123],
    )
    details: dict[str, str | Int] = Field(
        default_factory=dict,
        description="Facts particular to the worker kind; an embed worker: provider, model, "
        "device (cuda or cpu), max_tokens, threads. Empty for the other kinds (and in replies "
        "from versions before it existed).",
        examples=[{"provider": "local", "model": "all-MiniLM-L6-v2", "device": "cuda"}],
    )


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


class ErrorBody(BaseModel):
    """Every error, over HTTP and in an error reply over NATS (with a ``Lakehouse-Status``
    header): a short fixed phrase and the details. A 500 never carries an internal exception's
    text: its detail only says where to look."""

    error: str = Field(description="Short, stable error phrase.", examples=["not found"])
    detail: Any = Field(
        None,
        description="What went wrong: a message, or for invalid requests a list of "
        "``{loc, msg}`` naming each bad field.",
        examples=["no dataset named 'workers'"],
    )
