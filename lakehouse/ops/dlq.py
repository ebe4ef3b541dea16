"""Dead-letter tools: list, show, retry (re-publish the original after a fix) and purge."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from lakehouse.platform.errors import NotFound
from lakehouse.platform.storage import Storage
from schemas import subjects as S
from schemas.messages import DeadLetter


@dataclass(frozen=True)
class Letter:
    seq: int
    letter: DeadLetter


async def letters(js: JetStreamContext, kind: str) -> list[Letter]:
    out: list[Letter] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(S.STREAM_DLQ, seq, subject=S.dlq(kind), next=True)
        except NotFoundError:
            return out
        out.append(Letter(msg.seq or 0, DeadLetter.model_validate_json(msg.data or b"{}")))
        seq = (msg.seq or seq) + 1


async def get(js: JetStreamContext, kind: str, seq: int) -> Letter:
    for item in await letters(js, kind):
        if item.seq == seq:
            return item
    raise NotFound(f"no dead letter {seq} for kind {kind!r}")


async def payload(storage: Storage, letter: DeadLetter) -> bytes:
    if letter.payload_b64 is not None:
        return base64.b64decode(letter.payload_b64)
    if letter.payload_key:
        return await storage.get_bytes(letter.payload_key)
    return b""


async def retry(js: JetStreamContext, storage: Storage, kind: str, item: Letter) -> int:
    """Re-publish the original message to its subject and drop the dead letter."""
    letter = item.letter
    headers = {k: v for k, v in letter.headers.items() if not k.startswith("Nats-")}
    original = letter.headers.get("Nats-Msg-Id", f"{letter.stream}-{letter.stream_seq}")
    headers["Nats-Msg-Id"] = f"{original}-retry-{item.seq}"
    ack = await js.publish(letter.subject, await payload(storage, letter), headers=headers)
    await js.delete_msg(S.STREAM_DLQ, item.seq)
    if letter.payload_key:
        await storage.delete(letter.payload_key)
    return ack.seq


async def purge(js: JetStreamContext, kind: str) -> int:
    n = len(await letters(js, kind))
    await js.purge_stream(S.STREAM_DLQ, subject=S.dlq(kind))
    return n
