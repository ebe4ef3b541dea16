"""One worker kind's handlers in a test's own event loop, on a real nats-server.

No gateway and no worker processes: :func:`harness` starts one nats-server (or uses a given
URL), provisions the streams and opens the storage; :meth:`Harness.worker` runs a
:class:`~lakehouse.platform.runtime.Worker` subclass through the runtime's own start and stop
(the same consumers, services, acks, retries and dead letters as ``lakehouse worker``, minus
the signal handlers and uvloop)::

    async with harness(tmp_path) as h, h.worker("catalog"):
        raw = await h.request(S.CATALOG_REGISTER, RegisterRequest(...))
        reply = RegisterReply.model_validate_json(raw)

Handlers run in the test's loop, so a test can reach into a worker's state
(``rt.worker``) or replace what it calls (``monkeypatch.setattr(rt.worker.provider, ...)``).
``tests/conftest.py`` offers this as the ``harness`` fixture.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from lakehouse.devtools.servers import NatsServer
from lakehouse.platform.bus import STREAMS, connect, provision
from lakehouse.platform.config import Settings, load_settings, merged
from lakehouse.platform.rpc import call, scatter
from lakehouse.platform.runtime import Runtime, Worker
from lakehouse.platform.storage import Storage, open_storage
from schemas import subjects as S
from schemas.messages import DeadLetter
from workers import resolve

FAST = {
    "workers": {"ack_wait": 2.0, "backoff_base": 0.05, "backoff_max": 0.2},
    "catalog": {"gc_interval": 0},
}
"""Settings a harness starts from: short ack wait and backoff, no periodic orphan sweep."""


@dataclass
class Harness:
    """A real NATS with the streams, the storage, and worker kinds running in this loop."""

    root: Path
    overrides: dict[str, Any]
    settings: Settings
    nc: NATS
    js: JetStreamContext
    storage: Storage
    server: NatsServer | None = None

    def settings_with(self, **overrides: Any) -> Settings:
        """The harness's settings with ``overrides`` on top (one level deep per section)."""
        return load_settings(self.root / "none.toml", **merged(self.overrides, overrides))

    @asynccontextmanager
    async def worker(self, kind: str | type[Worker], **overrides: Any) -> AsyncIterator[Runtime]:
        """Run ``kind`` (a kind name, ``module:Class`` or a Worker subclass) until the block
        ends: then it stops as on SIGTERM (in-flight work finishes). Fails the test if one of
        its consumer loops crashed."""
        rt = await self._start(kind, self.settings_with(**overrides))
        done = asyncio.create_task(rt.stopped())
        await self.answering(rt)
        try:
            yield rt
        finally:
            rt.request_stop()
            rc = await done
        if rc:
            raise AssertionError(f"a {rt.kind} consumer loop crashed (see the log)")

    async def answering(self, rt: Runtime, timeout: float = 10.0) -> None:
        """Return once ``rt`` answers a health ping sent from the harness's own connection:
        its services are reachable from a client, not just subscribed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            replies = await scatter(
                self.nc,
                S.HEALTH_PING,
                b"",
                timeout=0.5,
                done=lambda got: any(rt.instance.encode() in r for r in got),
            )
            if any(rt.instance.encode() in r for r in replies):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{rt.kind} did not answer a health ping in {timeout} s")

    async def drain(self, kind: str | type[Worker], **overrides: Any) -> Runtime:
        """Run ``kind`` in burst mode: until its consumers have nothing pending; the stopped
        runtime (``rt.outcomes`` counts acked / retry / dead-lettered)."""
        rt = await self._start(kind, self.settings_with(**overrides), burst=True)
        rc = await rt.stopped()
        assert rc == 0, f"a {rt.kind} consumer loop crashed (see the log)"
        return rt

    async def _start(self, kind: str | type[Worker], settings: Settings, **kw: Any) -> Runtime:
        cls = resolve(kind) if isinstance(kind, str) else kind
        rt = Runtime(settings, cls, **kw)
        try:
            await rt.start()
        except BaseException:
            if hasattr(rt, "storage"):
                await rt.storage.close()
            if hasattr(rt, "nc"):
                await rt.nc.close()
            raise
        return rt

    async def request(
        self, subject: str, payload: BaseModel | bytes, *, timeout: float = 10.0
    ) -> bytes:
        """Request/reply as the gateway does it: the reply body, or the replier's error
        raised as :class:`~lakehouse.platform.errors.LakehouseError` (with its status)."""
        return await call(self.nc, subject, payload, timeout=timeout, what=subject)

    async def publish(
        self, subject: str, payload: BaseModel | bytes, *, msg_id: str | None = None
    ) -> PubAck:
        """Publish to JetStream (``msg_id``: the ``Nats-Msg-Id`` for deduplication)."""
        data = payload if isinstance(payload, bytes) else payload.model_dump_json().encode()
        return await self.js.publish(
            subject, data, headers={"Nats-Msg-Id": msg_id} if msg_id else None
        )

    async def expect(
        self,
        subject: str,
        match: Callable[[Msg], bool] = lambda _: True,
        *,
        timeout: float = 15.0,
    ) -> asyncio.Task[Msg]:
        """Subscribe now (before the action that should cause it) to the first message on
        ``subject`` that ``match`` accepts; await the returned task for it. Fails the test
        after ``timeout`` seconds."""
        found: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

        async def cb(msg: Msg) -> None:
            if not found.done() and match(msg):
                found.set_result(msg)

        sub = await self.nc.subscribe(subject, cb=cb)
        await self.nc.flush()  # the server has the subscription before the caller acts

        async def wait() -> Msg:
            try:
                async with asyncio.timeout(timeout):
                    return await found
            except TimeoutError:
                raise AssertionError(f"no matching message on {subject} in {timeout}s") from None
            finally:
                await sub.unsubscribe()

        return asyncio.create_task(wait())

    async def dead_letters(self, kind: str) -> list[DeadLetter]:
        """Every dead letter ``kind`` published, oldest first."""
        return await dead_letters(self.js, kind)


async def dead_letters(js: JetStreamContext, kind: str) -> list[DeadLetter]:
    """Every dead letter worker ``kind`` published, oldest first."""
    info = await js.stream_info(S.STREAM_DLQ)
    out = []
    if info.state.messages:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(S.STREAM_DLQ, seq)
            except NotFoundError:  # purged or deleted
                continue
            if msg.subject == S.dlq(kind):
                out.append(DeadLetter.model_validate_json(msg.data or b"{}"))
    return out


def inline_payload(letter: DeadLetter) -> bytes:
    """The failed message's body, carried inline by a dead letter."""
    assert letter.payload_b64 is not None, "the payload is stored by key, not inline"
    return base64.b64decode(letter.payload_b64)


@asynccontextmanager
async def harness(
    root: Path, *, nats_url: str | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    """A :class:`Harness` under ``root``: its own nats-server unless ``nats_url`` is given,
    the file storage in ``root/data``, ``overrides`` on :data:`FAST` settings."""
    server = None
    if nats_url is None:
        server = NatsServer(root / "nats")
        await asyncio.to_thread(server.start)
        nats_url = server.url
    try:
        base = merged(FAST, {"data_dir": root / "data", "nats": {"url": nats_url}})
        overrides = merged(base, overrides)
        settings = load_settings(root / "none.toml", **overrides)
        nc = await connect(settings, "lakehouse-harness")
        storage = open_storage(settings)
        h = Harness(root, overrides, settings, nc, nc.jetstream(), storage, server)
        try:
            await provision(h.js, STREAMS)
            yield h
        finally:
            await storage.close()
            await nc.close()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
