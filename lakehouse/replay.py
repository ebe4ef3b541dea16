"""Reading a range of a stream back, and folding it into state with the workers' own code.

:func:`read` walks ``[start, end]`` of any stream with JetStream direct gets (read-only: no
consumer is created, so work-queue streams can be read too). The folds rebuild what a worker
holds from the log alone:

- :class:`CatalogFold` — every dataset's current manifest and its revision history, the state
  the catalog worker serves and the query workers turn into views;
- :class:`VectorFold` — every index partition's live ids (and, with ``build=True``, the HNSW
  partitions themselves, applied by :meth:`lakehouse.hnsw.Partition.apply` exactly as a vector
  worker applies them).

``lakehouse replay`` and ``lakehouse verify`` are built on these.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from lakehouse.errors import BadRequest
from lakehouse.hnsw import Partition
from lakehouse.vectors import decode
from schemas.catalog import CatalogEvent, Manifest
from schemas.vectors import IndexSpec

# Headers the server adds to a direct-get reply; the rest are the message's own.
_SERVER_HEADERS = {"Nats-Stream", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Subject"}


@dataclass
class Record:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass
class Summary:
    stream: str
    first_seq: int = 0
    last_seq: int = 0
    messages: int = 0
    bytes: int = 0
    subjects: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)

    def add(self, rec: Record) -> None:
        self.first_seq = self.first_seq or rec.seq
        self.last_seq = rec.seq
        self.messages += 1
        self.bytes += len(rec.data)
        self.subjects[rec.subject] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "messages": self.messages,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "rate": round(self.messages / self.seconds, 1) if self.seconds else None,
            "subjects": dict(sorted(self.subjects.items())),
            "skipped": self.skipped,
        }


async def _direct(nc: NATS, stream: str, req: dict[str, Any]) -> Record | None:
    reply = await nc.request(f"$JS.API.DIRECT.GET.{stream}", json.dumps(req).encode(), timeout=10)
    headers = dict(reply.headers or {})
    status = headers.get("Status")
    if status == "404":
        return None
    if status:
        raise BadRequest(f"reading {stream}: {status} {headers.get('Description', '')}".strip())
    return Record(
        seq=int(headers["Nats-Sequence"]),
        subject=headers["Nats-Subject"],
        data=reply.data,
        headers={k: v for k, v in headers.items() if k not in _SERVER_HEADERS},
    )


async def bounds(
    nc: NATS,
    stream: str,
    *,
    from_seq: int | None = None,
    from_time: datetime | None = None,
    to_seq: int | None = None,
) -> tuple[int, int]:
    """The sequence range to read: from the start given (default the stream's first) to
    ``to_seq`` or the stream's last sequence *now* (so a replay of a busy stream ends)."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        raise BadRequest(f"no stream named {stream!r}") from None
    start = max(from_seq or 1, info.state.first_seq or 1)
    if from_time is not None:
        if from_time.tzinfo is None:
            from_time = from_time.replace(tzinfo=UTC)
        first = await _direct(nc, stream, {"start_time": from_time.isoformat()})
        start = first.seq if first else info.state.last_seq + 1
    end = min(to_seq or info.state.last_seq, info.state.last_seq)
    return start, end


async def read(
    nc: NATS, stream: str, start: int, end: int, subject: str | None = None
) -> AsyncIterator[Record]:
    """Every stored message of ``stream`` with ``start <= seq <= end`` (matching ``subject``,
    wildcards allowed), oldest first. Deleted and acked work-queue messages are skipped."""
    seq = start
    while seq <= end:
        rec = await _direct(nc, stream, {"seq": seq, "next_by_subj": subject or ">"})
        if rec is None or rec.seq > end:
            return
        yield rec
        seq = rec.seq + 1


def stream_of(name: str) -> str:
    """Accept a stream's name or a short form: ``catalog`` -> ``LAKEHOUSE_CATALOG``."""
    upper = name.upper()
    return upper if upper.startswith("LAKEHOUSE_") else f"LAKEHOUSE_{upper}"


# ---- folds ---------------------------------------------------------------------------
class CatalogFold:
    """The catalog rebuilt from its events: the current event of each dataset (tombstones
    included, so a replay of a later range can drop a dataset) and each dataset's history."""

    def __init__(self) -> None:
        self.current: dict[str, CatalogEvent] = {}
        self.history: dict[str, list[int]] = {}
        self.errors: list[str] = []

    def apply(self, rec: Record) -> None:
        try:
            event = CatalogEvent.model_validate_json(rec.data)
        except ValueError as exc:
            self.errors.append(f"seq {rec.seq}: not a catalog event ({exc.__class__.__name__})")
            return
        self.current[event.name] = event
        self.history.setdefault(event.name, []).append(event.revision)

    def manifests(self) -> dict[str, Manifest]:
        return {
            n: e.manifest
            for n, e in sorted(self.current.items())
            if e.type == "registered" and e.manifest is not None
        }


def ids_digest(ids: list[str]) -> str:
    """Order-free digest of an id set (what ``verify`` compares per partition)."""
    h = hashlib.sha256()
    for item in sorted(ids):
        h.update(item.encode())
        h.update(b"\n")
    return h.hexdigest()


class VectorFold:
    """Index partitions rebuilt from ``LAKEHOUSE_VECTORS``: live ids per partition, and with
    ``build=True`` the HNSW partitions (single-threaded by default: deterministic graphs)."""

    def __init__(self, specs: list[IndexSpec], *, build: bool = False, threads: int = 1) -> None:
        self.specs = {s.name: s for s in specs}
        self.build = build
        self.ids: dict[tuple[str, int], set[str]] = {}
        self.parts: dict[tuple[str, int], Partition] = {}
        self.threads = threads
        self.last_seq: dict[tuple[str, int], int] = {}
        self.errors: list[str] = []

    def apply(self, rec: Record) -> None:
        _, index, number = rec.subject.rsplit(".", 2)
        spec = self.specs.get(index)
        if spec is None:
            return  # batches of an index that no longer exists
        key = (index, int(number))
        self.last_seq[key] = rec.seq
        try:
            batch = decode(rec.data, spec.dim)
        except BadRequest as exc:
            self.errors.append(f"seq {rec.seq} ({rec.subject}): {exc.detail}")
            return  # the vector worker dead-letters and skips it too
        live = self.ids.setdefault(key, set())
        for item_id, op in zip(batch.ids, batch.ops, strict=True):
            if op == "delete":
                live.discard(item_id)
            else:
                live.add(item_id)
        if self.build:
            part = self.parts.get(key)
            if part is None:
                part = self.parts[key] = Partition(spec, key[1], threads=self.threads)
            part.apply(batch, rec.seq)

    def partitions(self, index: str) -> dict[int, dict[str, Any]]:
        spec = self.specs[index]
        out = {}
        for p in range(spec.partitions):
            ids = list(self.ids.get((index, p), ()))
            out[p] = {"count": len(ids), "digest": ids_digest(ids)}
        return out


async def fold(
    nc: NATS,
    stream: str,
    apply: Callable[[Record], Awaitable[None] | None],
    *,
    start: int = 1,
    end: int | None = None,
    subject: str | None = None,
    progress: Callable[[Summary, int], None] | None = None,
) -> Summary:
    """Read ``[start, end]`` of ``stream`` and hand every record to ``apply`` (a plain or an
    async function)."""
    if end is None:
        start, end = await bounds(nc, stream, from_seq=start)
    summary = Summary(stream)
    began = time.monotonic()
    async for rec in read(nc, stream, start, end, subject):
        done = apply(rec)
        if done is not None:
            await done
        summary.add(rec)
        if progress is not None:
            progress(summary, end)
    summary.seconds = time.monotonic() - began
    return summary
