"""Walking a stream: read any range of a JetStream stream back, oldest first.

:func:`read` walks ``[start, end]`` with JetStream direct gets (read-only: no consumer is
created, so work-queue streams can be read too); :func:`bounds` turns a user's range into
sequences; :func:`last_per_subject` reads the newest message of every subject matching a
filter. Replay, verify, the catalog's history, the dead-letter tools and the job list all read
this way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from lakehouse.platform.errors import BadRequest

# Headers the server adds to a direct-get reply; the rest are the message's own.
_SERVER_HEADERS = {"Nats-Stream", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Subject"}


@dataclass
class Record:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]


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


async def last_per_subject(nc: NATS, stream: str, subjects: str) -> list[Record]:
    """The newest stored message of each subject matching ``subjects`` (wildcards allowed),
    in subject order."""
    try:
        info = await nc.jetstream().stream_info(stream, subjects_filter=subjects)
    except NotFoundError:
        return []
    names = sorted(info.state.subjects or {})
    out: list[Record] = []
    for i in range(0, len(names), 64):  # bounded concurrency
        got = await asyncio.gather(
            *(_direct(nc, stream, {"last_by_subj": s}) for s in names[i : i + 64])
        )
        out += [r for r in got if r is not None]
    return out


def stream_of(name: str) -> str:
    """Accept a stream's name or a short form: ``catalog`` -> ``LAKEHOUSE_CATALOG``."""
    upper = name.upper()
    return upper if upper.startswith("LAKEHOUSE_") else f"LAKEHOUSE_{upper}"
