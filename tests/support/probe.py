"""A worker kind for runtime tests. Its behaviour comes from each message:

``{"id": "...", "sleep_first": s, "sleep": s, "fail": "always" | "permanent"}``.
Every attempt touches ``<PROBE_DIR>/<id>.started.<pid>.<delivery>``; a success stores
``probe/<id>`` (an idempotent effect) and appends ``<id> <pid>`` to ``effects.log``.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from nats.aio.msg import Msg

from lakehouse.platform.bus import ConsumerSpec, StreamSpec
from lakehouse.platform.errors import Permanent
from lakehouse.platform.runtime import Consume, Worker


def stream_name() -> str:
    return os.environ["PROBE_STREAM"]


def subject() -> str:
    return os.environ["PROBE_SUBJECT"]


class ProbeWorker(Worker):
    kind = "probe"

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(stream_name(), (subject(),), "probe test stream", work_queue=True)]

    def consumes(self) -> list[Consume]:
        spec = ConsumerSpec(
            stream_name(), "probe", subject(), ack_wait=self.rt.settings.workers.ack_wait
        )
        return [Consume(spec, self.handle)]

    async def handle(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        out = Path(os.environ["PROBE_DIR"])
        delivery = msg.metadata.num_delivered
        (out / f"{body['id']}.started.{os.getpid()}.{delivery}").touch()
        if body.get("sleep_first") and delivery == 1:
            await asyncio.sleep(body["sleep_first"])
        if body.get("sleep"):
            await asyncio.sleep(body["sleep"])
        if body.get("fail") == "always":
            raise RuntimeError(f"probe failure on delivery {delivery}")
        if body.get("fail") == "permanent":
            raise Permanent("probe says this can never work")
        await self.rt.storage.put_bytes(f"probe/{body['id']}", b"done")
        with (out / "effects.log").open("a") as fh:
            fh.write(f"{body['id']} {os.getpid()}\n")
