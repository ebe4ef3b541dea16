"""Auto-embed publishing (an ingest's rows into an index): the index to embed into, embed
requests for ``(id, text)`` pairs with deterministic batch ids, the hashes of those texts.

The caller renders the texts (the ingest worker, from a dataset's rows) and says what the
index already holds (:mod:`lakehouse.vectors.texts`); only texts whose hash differs are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext

from lakehouse.platform.config import Settings
from lakehouse.platform.errors import Conflict
from lakehouse.vectors import texts
from lakehouse.vectors.embedding import model_dim
from lakehouse.vectors.indexes import create_index, get_index
from schemas import subjects as S
from schemas.ingest import AutoEmbed
from schemas.vectors import EmbedRequest, IndexSpec, TextItem

BATCH = 256  # texts per EmbedRequest


@dataclass
class Published:
    batches: int = 0  # embed requests published
    ids: list[str] = field(default_factory=list)  # the items sent to the model
    shas: list[bytes] = field(default_factory=list)  # the hashes of their texts
    read: int = 0  # pairs looked at (sent or already held)


async def ensure_index(
    js: JetStreamContext, settings: Settings, dataset: str, embed: AutoEmbed
) -> IndexSpec:
    """The index ``embed`` names (created for ``dataset``, in the configured model's
    dimension, cosine, when missing)."""
    spec = await get_index(js, embed.index)
    if spec is None:
        spec = IndexSpec(
            name=embed.index,
            dim=model_dim(settings),
            dataset=dataset,
            id_column=embed.id_column,
            text_template=embed.text_template,
        )
        with contextlib.suppress(Conflict):
            await create_index(js, spec)
        spec = await get_index(js, embed.index) or spec
    return spec


async def publish(
    js: JetStreamContext,
    spec: IndexSpec,
    job_id: str,
    items: Iterable[tuple[str, str]],
    known: dict[str, bytes | None] | None = None,
) -> Published:
    """Embed requests for ``items`` (all, or with ``known`` those whose text hash differs
    from it), BATCH texts each, batch ids ``<job_id>-<n>``: the same items republished by a
    redelivered job get the same ids, which JetStream stores once."""
    out = Published()
    acks: list[asyncio.Future[Any]] = []
    batch: list[TextItem] = []

    async def send() -> None:
        er = EmbedRequest(
            batch_id=f"{job_id}-{len(acks)}", index=spec.name, items=batch, job_id=job_id
        )
        acks.append(
            await js.publish_async(
                S.embed_requests(spec.name),
                er.model_dump_json().encode(),
                headers={"Nats-Msg-Id": er.batch_id},
            )
        )

    for item_id, text in items:
        out.read += 1
        digest = texts.sha(text)
        if known is not None and known.get(item_id) == digest:
            continue
        batch.append(TextItem(id=item_id, text=text))
        out.ids.append(item_id)
        out.shas.append(digest)
        if len(batch) == BATCH:
            await send()
            batch = []
    if batch:
        await send()
    await asyncio.gather(*acks)
    out.batches = len(acks)
    return out


def hashes(items: Iterable[tuple[str, str]]) -> tuple[list[str], list[bytes]]:
    """Ids and text hashes of ``items`` (what an index holds once they are embedded)."""
    ids, shas = [], []
    for item_id, text in items:
        ids.append(item_id)
        shas.append(texts.sha(text))
    return ids, shas
