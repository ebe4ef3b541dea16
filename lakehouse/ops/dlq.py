"""Dead-letter tools: list, show, retry (re-publish the original after a fix) and purge."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from lakehouse.platform import streams
from lakehouse.platform.errors import NotFound
from lakehouse.platform.storage import Storage
from schemas import subjects as S
from schemas.messages import DeadLetter


@dataclass(frozen=True)
class Letter:
    seq: int
    letter: DeadLetter


async def letters(nc: NATS, kind: str) -> list[Letter]:
    """Every dead letter of ``kind``, oldest first."""
    start, end = await streams.bounds(nc, S.STREAM_DLQ)
    return [
        Letter(rec.seq, DeadLetter.model_validate_json(rec.data or b"{}"))
        async for rec in streams.read(nc, S.STREAM_DLQ, start, end, S.dlq(kind))
    ]


async def get(nc: NATS, kind: str, seq: int) -> Letter:
    for item in await letters(nc, kind):
        if item.seq == seq:
            return item
    raise NotFound(f"no dead letter {seq} for kind {kind!r}")


async def payload(storage: Storage, letter: DeadLetter) -> bytes:
    if letter.payload_b64 is not None:
        return base64.b64decode(letter.payload_b64)
    if letter.payload_key:
        return await storage.get_bytes(letter.payload_key)
    return b""


async def retry(nc: NATS, storage: Storage, kind: str, item: Letter) -> int:
    """Re-publish the original message to its subject and drop the dead letter."""
    js = nc.jetstream()
    letter = item.letter
    headers = {k: v for k, v in letter.headers.items() if not k.startswith("Nats-")}
    original = letter.headers.get("Nats-Msg-Id", f"{letter.stream}-{letter.stream_seq}")
    headers["Nats-Msg-Id"] = f"{original}-retry-{item.seq}"
    ack = await js.publish(letter.subject, await payload(storage, letter), headers=headers)
    await js.delete_msg(S.STREAM_DLQ, item.seq)
    if letter.payload_key:
        await storage.delete(letter.payload_key)
    return ack.seq


async def purge(nc: NATS, kind: str) -> int:
    n = len(await letters(nc, kind))
    await nc.jetstream().purge_stream(S.STREAM_DLQ, subject=S.dlq(kind))
    return n
