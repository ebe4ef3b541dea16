"""A 3-node NATS JetStream cluster: streams and the lease bucket with 3 copies
(``nats.replicas``), provisioning that a second run leaves alone, clients configured with
every node that fail over when theirs dies, and a connect to nothing that gives up in time;
``lakehouse cluster``: the whole clustered stack on one machine, started and stopped by the
command as a user runs it."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lakehouse.devtools.servers import NatsCluster, eventually
from lakehouse.platform.bus import STREAMS, connect, provision
from lakehouse.platform.config import Settings
from lakehouse.platform.leases import Leases
from lakehouse.platform.procs import REPO_ROOT, free_port
from schemas import subjects as S


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "cluster").start()
    yield c
    c.stop()


async def test_r3_streams_and_leases_provision_idempotently_and_clients_fail_over(
    cluster: NatsCluster, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(nats={"url": cluster.url, "replicas": 3}, storage={"shared": True})
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
    settings = make_settings(nats={"url": url, "connect_timeout": 0.5}, storage={"shared": True})
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        await connect(settings, "nowhere", deadline=2)
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_lakehouse_cluster_brings_up_the_clustered_stack_and_stops_it(tmp_path: Path) -> None:
    """3 NATS nodes, SeaweedFS as master + 3 volume servers + filer + S3, 2 hosts of the
    gateway and every worker kind: data written through one gateway is read through the
    other; Ctrl-C stops every process it started."""
    import httpx
    import psutil

    from lakehouse.devtools.servers import wait_until
    from lakehouse.devtools.stack import Proc, project_env, run_cli

    root = tmp_path / "cluster"
    # The README's command, as written there (its first line), plus a place and a port.
    readme = (REPO_ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("lakehouse cluster "))
    argv = [*line.split("#")[0].split()[1:], "--data-dir", str(root)]
    assert argv[:5] == ["cluster", "--nodes", "3", "--hosts", "2"]
    proc = Proc([*argv, "--http-port", str(free_port())], project_env(), tmp_path / "c.log")
    try:
        wait_until(
            lambda: "Press Ctrl-C" in proc.output() or proc.poll() is not None,
            timeout=180, interval=0.3, what="lakehouse cluster's banner",
        )  # fmt: skip
        banner = proc.output()
        assert proc.poll() is None, banner
        gateways = [ln.split()[1] for ln in banner.splitlines() if ln.startswith("  gateway ")]
        assert len(gateways) == 2, banner
        nats_line = next(ln for ln in banner.splitlines() if ln.startswith("  NATS "))
        assert nats_line.count("nats://") == 3 and "R3" in banner
        assert "SeaweedFS master, 3 volume servers (replication 001), filer, S3" in banner
        for base in gateways:
            body = httpx.get(f"{base}/health", timeout=10).json()
            assert {k: w["replicas"] for k, w in body["workers"].items()} == dict.fromkeys(
                S.WORKER_KINDS, 2
            ), body
            assert body["gateway"]["storage"].startswith("s3://")
        csv = tmp_path / "people.csv"
        csv.write_text("name,role\nann,forklift driver\nbob,welder\n")
        run_cli("ingest", str(csv), "--name", "people", "--url", gateways[0], env=project_env())
        out = run_cli(
            "sql", "select count(*) as n from people", "--url", gateways[1], "--format", "json",
            env=project_env(),
        )  # fmt: skip
        assert json.loads(out.stdout)["rows"] == [[2]], out.stdout
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3 + 6 + 2 * (1 + len(S.WORKER_KINDS)), children
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(90)
    assert rc == 0, proc.output()[-3000:]
    assert not [c for c in children if c.is_running() and c.status() != "zombie"]
