"""Embed worker: texts -> vectors.

Consumes ``lakehouse.embed.requests.<index>`` (batches of ``{id, text, metadata}``), embeds
them in model-sized batches and publishes binary vector batches to the owning partitions'
subjects (deterministic ``Nats-Msg-Id``, so a redelivered request is stored once). Answers
query-time ``lakehouse.embed.text`` requests from an LRU cache in front of the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict

import numpy as np
from nats.aio.msg import Msg

from lakehouse.bus import ConsumerSpec
from lakehouse.embedding import Provider, load_provider
from lakehouse.errors import Permanent, RetryLater, Unavailable
from lakehouse.rpc import parse
from lakehouse.runtime import Consume, Serve, Worker
from lakehouse.vectors import encode, get_index, partition_of
from schemas import subjects as S
from schemas.vectors import EmbedRequest, EmbedText

log = logging.getLogger("workers.embed")


class EmbedWorker(Worker):
    kind = "embed"

    def consumes(self) -> list[Consume]:
        spec = ConsumerSpec(
            S.STREAM_EMBED,
            "embed",
            S.all_under(S.EMBED_REQUESTS_PREFIX),
            ack_wait=self.rt.settings.workers.ack_wait,
            description="embed workers",
        )
        return [Consume(spec, self.handle)]

    def serves(self) -> list[Serve]:
        return [Serve(S.EMBED_TEXT, self.embed_text)]

    async def setup(self) -> None:
        self.provider: Provider = await asyncio.to_thread(load_provider, self.rt.settings)
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.model_lock = asyncio.Lock()  # one model call at a time; it uses every core

    async def embed(self, texts: list[str]) -> np.ndarray:
        size = self.rt.settings.embed.batch_size
        out = []
        for start in range(0, len(texts), size):
            async with self.model_lock:
                out.append(
                    await asyncio.to_thread(self.provider.embed, texts[start : start + size])
                )
        return np.concatenate(out) if out else np.zeros((0, self.provider.dim), np.float32)

    async def handle(self, msg: Msg) -> None:
        try:
            req = EmbedRequest.model_validate_json(msg.data)
        except ValueError as exc:
            raise Permanent(f"invalid EmbedRequest: {exc}") from None
        spec = await get_index(self.rt.js, req.index)
        if spec is None:
            raise Permanent(f"no vector index named {req.index!r}", status=404, error="not found")
        if spec.dim != self.provider.dim:
            raise Permanent(
                f"model {self.provider.model} gives {self.provider.dim}-d vectors; "
                f"index {spec.name!r} has dim {spec.dim}",
                error="dimension mismatch",
            )
        vectors = await self.embed([item.text for item in req.items])
        groups: dict[int, list[int]] = {}
        for i, item in enumerate(req.items):
            groups.setdefault(partition_of(item.id, spec.partitions), []).append(i)
        acks = []
        for p, rows in sorted(groups.items()):
            data = encode(
                [req.items[i].id for i in rows],
                vectors[rows],
                [req.items[i].metadata for i in rows],
                dim=spec.dim,
            )
            acks.append(
                await self.rt.js.publish_async(
                    S.vectors(spec.name, p),
                    data,
                    headers={"Nats-Msg-Id": f"emb-{req.batch_id}-{p}"},
                )
            )
        await asyncio.gather(*acks)
        if req.job_id:
            done = {"batch_id": req.batch_id, "items": len(req.items)}
            await self.rt.js.publish(
                f"{S.job(req.job_id)}.embed.{req.batch_id}",
                json.dumps(done).encode(),
                headers={"Nats-Msg-Id": f"embedded-{req.batch_id}"},
            )

    async def embed_text(self, msg: Msg) -> bytes:
        req = parse(EmbedText, msg.data)
        missing = list(dict.fromkeys(t for t in req.texts if t not in self.cache))
        if missing:
            try:
                fresh = await self.embed(missing)
            except RetryLater as exc:
                raise Unavailable(str(exc)) from None
            for text, vec in zip(missing, fresh, strict=True):
                self.cache[text] = vec
        limit = self.rt.settings.embed.cache_size
        for text in req.texts:
            self.cache.move_to_end(text)
        while len(self.cache) > limit:
            self.cache.popitem(last=False)
        body = {
            "model": self.provider.model,
            "dim": self.provider.dim,
            "vectors": [self.cache[t].tolist() for t in req.texts],
        }
        return json.dumps(body).encode()
