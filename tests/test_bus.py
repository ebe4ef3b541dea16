"""Provisioning from one declaration, and JetStream de-duplication, on a real nats-server."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import subprocess
from pathlib import Path

import nats
import pytest
from nats.js.errors import ServiceUnavailableError

from lakehouse.devtools.servers import NatsServer, eventually, wait_until
from lakehouse.platform.bus import STREAMS, ConsumerSpec, provision
from lakehouse.platform.procs import find_binary, free_port, port_open
from schemas import subjects as S


async def test_provision_is_idempotent_and_updates_changes(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    consumer = ConsumerSpec(S.STREAM_INGEST, "ingest", S.INGEST_REQUESTS, ack_wait=30)
    first = await provision(js, STREAMS, [consumer])
    assert len(first.created) == len(STREAMS) + 1 and not first.updated
    created = {s.name: (await js.stream_info(s.name)).created for s in STREAMS}

    second = await provision(js, STREAMS, [consumer])
    assert not second.created and not second.updated
    assert len(second.unchanged) == len(STREAMS) + 1
    assert {s.name: (await js.stream_info(s.name)).created for s in STREAMS} == created

    changed_streams = [
        dataclasses.replace(s, max_age=3600.0) if s.name == S.STREAM_DLQ else s for s in STREAMS
    ]
    changed_consumer = dataclasses.replace(consumer, ack_wait=45)
    third = await provision(js, changed_streams, [changed_consumer])
    assert not third.created
    assert len(third.updated) == 2, third.updated
    assert (await js.stream_info(S.STREAM_DLQ)).config.max_age == 3600.0
    assert (await js.consumer_info(S.STREAM_INGEST, "ingest")).config.ack_wait == 45
    names = [s.config.name async for s in _streams(js)]
    assert sorted(names) == sorted(s.name for s in STREAMS)  # updated, not duplicated
    await nc.close()


async def _streams(js):  # type: ignore[no-untyped-def]
    for info in await js.streams_info():
        yield info


async def test_same_msg_id_is_stored_once(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await provision(js)
    hdr = {"Nats-Msg-Id": "job-123"}
    a = await js.publish(S.INGEST_REQUESTS, b"{}", headers=hdr)
    b = await js.publish(S.INGEST_REQUESTS, b"{}", headers=hdr)
    assert not a.duplicate and b.duplicate and a.seq == b.seq
    assert (await js.stream_info(S.STREAM_INGEST)).state.messages == 1
    await nc.close()


async def test_provision_waits_out_a_server_without_jetstream_within_its_patience(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's start-up provisioning (``patience``): a timeout or a JetStream 503 is tried
    again until JetStream answers; without patience the first 503 is the error."""
    port = free_port()
    bare = subprocess.Popen(
        [find_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port)],  # no -js
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server: NatsServer | None = None
    try:
        wait_until(lambda: port_open("127.0.0.1", port), timeout=15, what="bare nats-server")
        nc = await nats.connect(
            f"nats://127.0.0.1:{port}", reconnect_time_wait=0.1, max_reconnect_attempts=-1
        )
        js = nc.jetstream(timeout=1)
        with pytest.raises(ServiceUnavailableError):
            await provision(js, STREAMS)
        caplog.set_level(logging.WARNING, logger="lakehouse.bus")
        patient = asyncio.create_task(provision(js, STREAMS, patience=60))

        def retried() -> bool:
            return any(r.getMessage() == "provisioning again" for r in caplog.records)

        await eventually(retried, timeout=30, what="a second provisioning pass")
        assert not patient.done()
        bare.terminate()
        bare.wait(10)
        server = NatsServer(tmp_path / "nats", port=port).start()  # now with JetStream
        report = await asyncio.wait_for(patient, 60)
        assert len(report.created) == len(STREAMS)
        assert {i.config.name for i in await js.streams_info()} == {s.name for s in STREAMS}
        await nc.close()
    finally:
        bare.kill()
        if server is not None:
            server.stop()
