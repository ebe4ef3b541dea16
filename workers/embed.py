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

from lakehouse.platform import faults
from lakehouse.platform.bus import ConsumerSpec
from lakehouse.platform.errors import Permanent, RetryLater, Unavailable
from lakehouse.platform.natsauth import Uses
from lakehouse.platform.rpc import parse
from lakehouse.platform.runtime import Consume, Serve, Worker
from lakehouse.vectors import batches
from lakehouse.vectors.embedding import Provider, describe, load_provider
from lakehouse.vectors.indexes import get_index
from schemas import subjects as S
from schemas.vectors import EmbedRequest, EmbedText

log = logging.getLogger("workers.embed")


class EmbedWorker(Worker):
    kind = "embed"
    uses = Uses(
        publishes=(S.all_under(S.VECTORS_PREFIX), f"{S.job('*')}.embed.*"),
        reads=(S.STREAM_INDEXES,),
    )

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
        # One model call at a time: it uses embed.threads cores (default: every core).
        self.model_lock = asyncio.Lock()
        log.info("embedding model loaded", extra=describe(self.provider))

    def health_details(self) -> dict[str, str | int]:
        """Provider, model and, for the local model, device (cuda or cpu), max_tokens and
        threads (health pings are answered only after :meth:`setup` loaded the model)."""
        return describe(self.provider)

    def model(self, texts: list[str]) -> np.ndarray:
        faults.fail_on(self.rt.settings, texts)
        return self.provider.embed(texts)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Model-sized batches of similar length (a batch is padded to its longest text, so
        sorting by length first saves most of the padding), results in the input order."""
        size = self.rt.settings.embed.batch_size
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.provider.dim), np.float32)
        for start in range(0, len(texts), size):
            rows = order[start : start + size]
            async with self.model_lock:
                out[rows] = await asyncio.to_thread(self.model, [texts[i] for i in rows])
        return out

    async def embed_each(self, req: EmbedRequest, msg: Msg) -> tuple[list[int], np.ndarray]:
        """After a batch failed in the model: embed item by item, dead-letter the items the
        model rejects (one letter holding them, with the first reason) and keep the rest."""
        good, rows, bad, reasons = [], [], [], []
        for i, item in enumerate(req.items):
            try:
                rows.append((await self.embed([item.text]))[0])
                good.append(i)
            except (RetryLater, Unavailable):
                raise
            except Exception as exc:
                bad.append(item)
                reasons.append(f"{item.id}: {type(exc).__name__}: {exc}")
        if not bad:  # the batch failed but every item alone works: treat as transient
            raise RetryLater("the model failed on the batch but not on any single item")
        failed = req.model_copy(update={"items": bad, "batch_id": f"{req.batch_id}-failed"})
        await self.rt.publish_dead_letter(
            msg,
            f"the model failed on {len(bad)} of {len(req.items)} item(s); first: {reasons[0]}",
            payload=failed.model_dump_json().encode(),
            part="failed",
        )
        log.warning("items dead-lettered", extra={"batch": req.batch_id, "failed": len(bad)})
        dim = self.provider.dim
        return good, np.stack(rows) if rows else np.zeros((0, dim), np.float32)

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
        keep = list(range(len(req.items)))
        try:
            vectors = await self.embed([item.text for item in req.items])
        except (RetryLater, Unavailable):
            raise
        except Exception:
            keep, vectors = await self.embed_each(req, msg)
        encoded = batches.batches(
            [req.items[i].id for i in keep],
            vectors,
            [req.items[i].metadata for i in keep],
            dim=spec.dim,
            partitions=spec.partitions,
        )
        # One id per (request, partition): a redelivered request whose model output differs
        # by a rounding error is still stored once.
        await batches.publish(
            self.rt.js, spec.name, encoded, msg_id=lambda p, _: f"emb-{req.batch_id}-{p}"
        )
        if req.job_id:
            failed = len(req.items) - len(keep)  # dead-lettered with the reason
            done = {"batch_id": req.batch_id, "items": len(keep), "failed": failed}
            await self.rt.js.publish(
                f"{S.job(req.job_id)}.embed.{req.batch_id}",
                json.dumps(done).encode(),
                headers={"Nats-Msg-Id": f"embedded-{req.batch_id}"},
            )

    async def embed_text(self, msg: Msg) -> bytes:
        req = parse(EmbedText, msg.data)
        missing = list(dict.fromkeys(t for t in req.texts if t not in self.cache))
        found = {t: self.cache[t] for t in req.texts if t in self.cache}
        if missing:
            try:
                fresh = await self.embed(missing)
            except RetryLater as exc:
                raise Unavailable(str(exc)) from None
            found.update(zip(missing, fresh, strict=True))
        # The answer comes from ``found``: a request with more distinct texts than the cache
        # holds still gets every vector; the cache keeps the most recently used ones.
        limit = self.rt.settings.embed.cache_size
        for text in dict.fromkeys(req.texts):
            self.cache[text] = found[text]
            self.cache.move_to_end(text)
        while len(self.cache) > limit:
            self.cache.popitem(last=False)
        body = {
            "model": self.provider.model,
            "dim": self.provider.dim,
            "vectors": [found[t].tolist() for t in req.texts],
        }
        return json.dumps(body).encode()
