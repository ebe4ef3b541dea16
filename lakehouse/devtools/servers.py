"""Real servers for tests: nats-server (JetStream) and SeaweedFS S3, on free loopback ports."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from lakehouse.devtools.netns import Network
from lakehouse.platform.procs import (
    find_binary,
    free_port,
    nats_server_argv,
    port_open,
    with_nats_sync,
)

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Bounded poll: return the first truthy value of predicate() or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class NatsServer:
    """nats-server with JetStream on ``port``, storing under ``store_dir``.

    ``config``: the text of a nats-server config to run instead of the repo's
    nats-server.conf (TLS, users and permissions, a cluster), written to
    ``store_dir/nats.conf``. Address, port and store stay flags (``-a -p -sd``), so the
    text leaves out ``listen``/``port`` and ``jetstream { store_dir }``. The server's log
    is ``store_dir/nats.log``."""

    store_dir: Path
    port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    config: str | None = None
    host: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)  # e.g. a network namespace's `ip netns exec`
    probe: Callable[[Callable[[], bool]], bool] = field(default=lambda check: check())

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.store_dir / "nats.log"

    def start(self) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config_file = None
        if self.config is not None:
            if re.search(r"\bstore_dir\b", self.config):
                raise ValueError("NatsServer config must not set store_dir (-sd sets it)")
            config_file = self.store_dir / "nats.conf"
            config_file.write_text(self.config)
        argv = nats_server_argv(self.port, self.store_dir, host=self.host, config=config_file)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *argv, *self.extra], stdout=subprocess.DEVNULL, stderr=log
            )

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nats-server exited ({self.proc.returncode}):\n{tail}")
            return self.probe(lambda: port_open(self.host, self.port))

        wait_until(listening, what="nats-server to listen")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class NatsCluster:
    """``size`` nats-servers joined by cluster routes, each with JetStream and its own store
    (``root/node<i>``), on loopback or, with a ``network``, node ``i`` on machine ``n<i>``
    (its own network namespace, fixed ports). ``node_config(i)`` may add to a node's config
    (TLS, users), ``route_config(i)`` to its ``cluster { }`` block (route TLS). Each node
    serves monitoring (``/jsz``) for :meth:`leader`. :meth:`start` (blocking; from async
    code run it in a thread) returns once JetStream has a meta leader and every peer (an
    R-size stream can be placed)."""

    root: Path
    size: int = 3
    name: str = "lakehouse"
    node_config: Callable[[int], str] | None = None
    route_config: Callable[[int], str] | None = None
    nodes: list[NatsServer] = field(default_factory=list)
    network: Network | None = None
    monitor_ports: list[int] = field(default_factory=list)
    sync: str = "default"  # jetstream sync_interval (supervisor.nats_sync's values)

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (``nats.url``)."""
        return ",".join(n.url for n in self.nodes)

    def machine(self, i: int) -> str:
        """The machine (network namespace) of node ``i`` (1-based)."""
        return f"n{i}"

    def call(self, fn: Callable[[], T], i: int = 1) -> T:
        """``fn()`` where node ``i`` can be reached (inside its machine, with a network)."""
        return self.network.call(self.machine(i), fn) if self.network else fn()

    def start(self) -> NatsCluster:
        # Ports are picked before the nodes bind them (each names the others' routes): when
        # another process takes one in between, start over on new ports.
        for attempt in range(3):
            try:
                self._start_nodes()
                break
            except RuntimeError as exc:
                self.stop()
                self.nodes.clear()
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
        try:
            wait_until(self._ready, timeout=30, interval=0.2, what="a JetStream meta leader")
        except BaseException:
            self.stop()  # no node outlives a start that failed
            raise
        return self

    def _start_nodes(self) -> None:
        net = self.network
        hosts = [
            net.address(self.machine(i)) if net else "127.0.0.1" for i in range(1, 1 + self.size)
        ]
        routes = [6222 if net else free_port() for _ in hosts]
        self.monitor_ports = [8222 if net else free_port() for _ in hosts]
        for i, (host, route) in enumerate(zip(hosts, routes, strict=True), start=1):
            peers = ", ".join(
                f"nats-route://{h}:{p}"
                for h, p in zip(hosts, routes, strict=True)
                if h != host or p != route
            )
            config = (
                f"server_name: n{i}\njetstream {{}}\nmax_payload: 8MB\n"
                f"http: {host}:{self.monitor_ports[i - 1]}\n"
                f"cluster {{\n  name: {self.name}\n  listen: {host}:{route}\n"
                f"  routes: [{peers}]\n"
                f"{self.route_config(i) if self.route_config else ''}}}\n"
            )
            if self.node_config is not None:
                config += self.node_config(i)
            config = with_nats_sync(config, self.sync)
            node = NatsServer(self.root / f"node{i}", config=config, host=host)
            if net:
                node.port = 4222
                node.prefix = net.prefix(self.machine(i))
                node.probe = functools.partial(net.call, self.machine(i))
            self.nodes.append(node)
            node.start()

    def _ready(self) -> bool:
        """Whether a stream with a copy on every node can be placed now (a throwaway one)."""
        import asyncio

        import nats
        from nats.js import api

        async def place() -> bool:
            nc = await nats.connect(self.nodes[0].url, connect_timeout=1, allow_reconnect=False)
            try:
                js = nc.jetstream(timeout=2)
                probe = api.StreamConfig(
                    name="CLUSTER_READY",
                    subjects=["cluster.ready"],
                    num_replicas=self.size,
                    storage=api.StorageType.MEMORY,
                )
                await js.add_stream(probe)
                await js.delete_stream("CLUSTER_READY")
                return True
            finally:
                await nc.close()

        try:
            return self.call(lambda: asyncio.run(place()))
        except Exception:  # no meta leader yet, or too few peers known
            return False

    def leader(self, stream: str | None = None) -> int | None:
        """1-based index of the node leading ``stream`` (None: the JetStream meta leader),
        as the live nodes' monitoring reports it; None while there is none."""
        query = "?streams=true&config=false" if stream else ""
        for i, node in enumerate(self.nodes, start=1):
            if node.proc is None or node.proc.poll() is not None:
                continue
            url = f"http://{node.host}:{self.monitor_ports[i - 1]}/jsz{query}"
            try:
                body = self.call(lambda u=url: httpx.get(u, timeout=2).json(), i)  # type: ignore[misc]
            except (httpx.HTTPError, ValueError):
                continue
            if stream is None:
                name = (body.get("meta_cluster") or {}).get("leader")
            else:
                name = None
                for acc in body.get("account_details") or []:
                    for st in acc.get("stream_detail") or []:
                        if st.get("name") == stream:
                            name = (st.get("cluster") or {}).get("leader")
            if name:
                return int(str(name).lstrip("n"))
        return None

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class S3Endpoint:
    """An S3 endpoint with one access key, as a ``storage`` settings section and as a boto3
    client: what :class:`SeaweedS3` and ``lakehouse.devtools.weed.SeaweedCluster`` share.
    A subclass has ``access_key``, ``secret_key``, ``ca_file`` and ``endpoint``."""

    access_key: str
    secret_key: str
    ca_file: Path | None

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    def storage(self, bucket: str, part_size: int | None = None) -> dict[str, Any]:
        """The ``storage`` settings section for ``bucket`` on this server (multipart parts of
        ``part_size`` bytes, else the default)."""
        section: dict[str, Any] = {
            "url": f"s3://{bucket}",
            "s3_endpoint": self.endpoint,
            "s3_access_key": self.access_key,
            "s3_secret_key": self.secret_key,
        }
        if part_size is not None:
            section["s3_part_size"] = part_size
        return section

    def client(self, timeout: float | None = None) -> Any:
        """A boto3 S3 client with this key, path-style, no retries (``timeout``: seconds to
        connect and to wait for a response, else botocore's 60)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            verify=str(self.ca_file) if self.ca_file else None,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=60 if timeout is None else timeout,
                read_timeout=60 if timeout is None else timeout,
            ),
        )


@dataclass
class SeaweedS3(S3Endpoint):
    """``weed mini`` under ``root``; with ``cert_file``/``key_file`` its S3 port serves
    HTTPS only (``ca_file``: what :meth:`client` trusts, e.g. the CA that signed them)."""

    root: Path
    access_key: str = "lakehouse-test"
    secret_key: str = "lakehouse-test-secret"
    s3_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    ports: list[int] = field(default_factory=list)
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.cert_file and self.key_file else "http"
        return f"{scheme}://127.0.0.1:{self.s3_port}"

    def start(self) -> SeaweedS3:
        # weed also listens on each port + 10000 (gRPC): pick ports where both are free.
        self.ports = []
        while len(self.ports) < 4:
            p = free_port(avoid_plus=10000)
            if p not in self.ports:
                self.ports.append(p)
        master, volume, filer, self.s3_port = self.ports
        self.root.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "GOMEMLIMIT": "256MiB",
        }
        argv = [
            find_binary("weed"),
            "mini",
            f"-dir={self.root}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-s3.port={self.s3_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
        ]
        if self.cert_file and self.key_file:
            argv += [f"-s3.cert.file={self.cert_file}", f"-s3.key.file={self.key_file}"]
        log = (self.root / "weed.log").open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root
        )
        wait_until(self._ready, timeout=60, interval=0.2, what="SeaweedFS S3 to accept requests")
        return self

    def _ready(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"weed exited early; see {self.root / 'weed.log'}")
        if not port_open("127.0.0.1", self.s3_port):
            return False
        try:
            c = self.client()
            c.create_bucket(Bucket="readiness-probe")
            c.put_object(Bucket="readiness-probe", Key="ok", Body=b"1")
            return True
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in self.ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*{p}.sock"):
                sock.unlink(missing_ok=True)
            for sock in Path("/tmp").glob(f"seaweedfs-*{p + 10000}.sock"):
                sock.unlink(missing_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)


async def eventually(
    predicate: Callable[[], Any],
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Async bounded poll; ``predicate`` may return a value or an awaitable."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
