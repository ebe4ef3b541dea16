"""A 3-node NATS JetStream cluster: streams and the lease bucket with 3 copies
(``nats.replicas``), provisioning that a second run leaves alone, clients configured with
every node that fail over when theirs dies, and a connect to nothing that gives up in time."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lakehouse.devtools.servers import NatsCluster, eventually
from lakehouse.platform.bus import STREAMS, connect, provision
from lakehouse.platform.config import Settings
from lakehouse.platform.leases import Leases
from lakehouse.platform.procs import free_port
from schemas import subjects as S


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "cluster").start()
    yield c
    c.stop()


async def test_r3_streams_and_leases_provision_idempotently_and_clients_fail_over(
    cluster: NatsCluster, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(nats={"url": cluster.url, "replicas": 3})
    nc = await connect(settings, "test-cluster", deadline=10)
    try:
        js = nc.jetstream(timeout=5)
        first = await provision(js, STREAMS, replicas=3)
        assert len(first.created) == len(STREAMS)
        again = await provision(js, STREAMS, replicas=3)
        assert again.created == again.updated == [], again
        for spec in STREAMS:
            info = await js.stream_info(spec.name)
            assert info.config.num_replicas == 3
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        leases = Leases(js, "test", ttl=5, replicas=settings.nats.replicas)
        await leases.open()
        kv = await js.stream_info(f"KV_{S.KV_LEASES}")
        assert kv.config.num_replicas == 3
        # Left to itself (replicas None), provisioning keeps what the streams have.
        kept = await provision(js, STREAMS)
        assert kept.updated == []

        # The node this client is on dies: it moves to another (pings every
        # nats.ping_interval) and a JetStream publish is stored by the other two.
        assert nc.options["ping_interval"] == settings.nats.ping_interval
        port = int(str(nc.connected_url.netloc).rsplit(":", 1)[1]) if nc.connected_url else 0
        [mine] = [n for n in cluster.nodes if n.port == port]
        assert mine.proc is not None
        mine.proc.send_signal(signal.SIGKILL)
        mine.proc.wait()
        started = time.monotonic()

        async def stored() -> bool:
            try:
                await js.publish(S.INGEST_REQUESTS, b"{}", timeout=1)
                return True
            except Exception:
                return False

        await eventually(stored, timeout=20, interval=0.2, what="a publish after fail-over")
        assert nc.connected_url is not None and nc.connected_url.port != port
        print(f"fail-over to a live node: {time.monotonic() - started:.1f} s")
    finally:
        await nc.close()


async def test_connect_to_nodes_that_are_all_down_gives_up_in_time(
    make_settings: Callable[..., Settings],
) -> None:
    url = ",".join(f"nats://127.0.0.1:{free_port()}" for _ in range(3))
    settings = make_settings(nats={"url": url, "connect_timeout": 0.5})
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        await connect(settings, "nowhere", deadline=2)
    assert time.monotonic() - started < 10
