"""Partition leases in a JetStream key-value bucket whose entries expire after ``ttl``.

A lease is the key ``<index>.<partition>`` holding the owner's instance id: ``create``
succeeds for one worker only, the owner renews it with a revision-checked ``update``, and an
owner that dies stops renewing, so its leases expire and another worker creates them. Live
workers announce themselves as ``members.<instance>``; each aims at an equal share.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue

from schemas import subjects as S

log = logging.getLogger("lakehouse.leases")


class Leases:
    def __init__(self, js: JetStreamContext, instance: str, ttl: float, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas
        self.instance = instance
        self.ttl = ttl
        self.kv: KeyValue
        self.held: dict[str, int] = {}  # key -> revision of our last write

    async def open(self) -> None:
        try:
            self.kv = await self.js.key_value(S.KV_LEASES)
        except BucketNotFoundError:
            try:
                self.kv = await self.js.create_key_value(
                    bucket=S.KV_LEASES, ttl=self.ttl, history=1, replicas=self.replicas
                )
            except BadRequestError:  # another worker created it first
                self.kv = await self.js.key_value(S.KV_LEASES)

    async def heartbeat(self) -> None:
        await self.kv.put(f"members.{self.instance}", self.instance.encode())

    async def members(self) -> list[str]:
        try:
            keys = await self.kv.keys()  # (nats-py's key filters do not match here)
        except NoKeysError:
            return [self.instance]
        found = {k.split(".", 1)[1] for k in keys if k.startswith("members.")}
        return sorted(found | {self.instance})

    async def owner(self, key: str) -> str | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def acquire(self, key: str) -> bool:
        try:
            self.held[key] = await self.kv.create(key, self.instance.encode())
            return True
        except (KeyWrongLastSequenceError, BadRequestError):
            return False

    async def renew(self, key: str) -> bool:
        """False when the lease was lost (expired and taken, or deleted)."""
        try:
            self.held[key] = await self.kv.update(key, self.instance.encode(), last=self.held[key])
            return True
        except (KeyWrongLastSequenceError, BadRequestError, KeyError):
            self.held.pop(key, None)
            return False

    async def release(self, key: str) -> None:
        rev = self.held.pop(key, None)
        if rev is not None:
            try:
                await self.kv.delete(key, last=rev)
            except (KeyWrongLastSequenceError, BadRequestError):
                pass

    async def leave(self) -> None:
        for key in list(self.held):
            await self.release(key)
        try:
            await self.kv.delete(f"members.{self.instance}")
        except Exception as exc:  # expires on its own anyway
            log.debug("leave failed", extra={"error": str(exc)})
