"""A clustered stack on one machine: ``lakehouse cluster`` and the chaos tests run this code.

- NATS: ``nodes`` nats-servers joined by routes (:class:`NatsCluster`), every stream and the
  lease bucket with ``min(nodes, 3)`` copies.
- Storage: SeaweedFS as separate servers (master, 3 volume servers with replication 001,
  filer, S3: :class:`SeaweedCluster`), or ``file://`` declared shared (``storage.shared``;
  every "host" here is one machine).
- ``hosts`` copies of the gateway and every worker kind, each host with its own data dir
  (and so its own caches) and its own log files under ``root/<host>/``.

With ``netns`` every NATS node is a machine of its own (a Linux network namespace, see
:mod:`lakehouse.devtools.netns`), host ``j`` runs on node ``((j-1) % nodes) + 1``'s machine and
SeaweedFS on a machine ``s3``: cutting a machine's link partitions that node together with
the workers on it. Processes are reached from here through :meth:`Cluster.call`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from lakehouse.devtools.netns import Network
from lakehouse.devtools.servers import NatsCluster, wait_until
from lakehouse.devtools.stack import TUNED, Proc, project_env, run_cli
from lakehouse.platform.config import Settings, load_settings, merged
from lakehouse.platform.procs import free_port
from schemas.subjects import WORKER_KINDS

T = TypeVar("T")


@dataclass
class Host:
    """One copy of the gateway and every worker kind, with its own data dir."""

    name: str
    machine: str | None  # its network namespace's machine, None on loopback
    settings: Settings
    procs: dict[str, list[Proc]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        gw = self.settings.gateway
        return f"http://{gw.host}:{gw.port}"

    @property
    def root(self) -> Path:
        return self.settings.data_dir.parent

    def pids(self) -> dict[str, list[int]]:
        return {k: [p.pid for p in v if p.poll() is None] for k, v in self.procs.items()}


@dataclass
class Cluster:
    root: Path
    nodes: int = 3
    hosts: int = 2
    kinds: tuple[str, ...] = tuple(WORKER_KINDS)
    storage: str = "s3"  # "s3": SeaweedFS servers; "file": one shared directory
    netns: bool = False
    tuned: bool = False  # the tests' short ack wait and backoff (TUNED)
    http_port: int | None = None  # first gateway's port (others follow); default: free ports
    overrides: dict[str, Any] = field(default_factory=dict)
    nats: NatsCluster | None = None
    weed: Any = None  # a SeaweedCluster
    network: Network | None = None
    members: list[Host] = field(default_factory=list)
    count: int = 0

    @property
    def replicas(self) -> int:
        return min(self.nodes, 3)

    def start(self, timeout: float = 120) -> Cluster:
        """Everything up and every kind answering health ``hosts`` times; on a failure
        everything started is stopped again."""
        try:
            self._start_servers()
            for j in range(1, self.hosts + 1):
                self.members.append(self._host(j))
            self._provision()
            for host in self.members:
                self.spawn(host, "gateway", "gateway")
                for kind in self.kinds:
                    self.spawn(host, kind, "worker", kind)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_servers(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.netns:
            self.network = Network().create()
            for i in range(1, self.nodes + 1):
                self.network.add(f"n{i}")
            if self.storage == "s3":
                self.network.add("s3")
        sync = load_settings(self.root / "none.toml", **self.overrides).supervisor.nats_sync
        self.nats = NatsCluster(self.root / "nats", self.nodes, network=self.network, sync=sync)
        self.nats.start()
        if self.storage == "s3":
            from lakehouse.devtools.weed import SeaweedCluster

            weed = SeaweedCluster(self.root / "s3")
            if self.network is not None:
                weed.host = self.network.address("s3")
                weed.prefix = self.network.prefix("s3")
                weed.reachable = False
            self.weed = weed.start()

    def machine_of(self, j: int) -> str | None:
        return f"n{(j - 1) % self.nodes + 1}" if self.network else None

    def _host(self, j: int) -> Host:
        assert self.nats is not None
        machine = self.machine_of(j)
        if self.network is not None and machine is not None:
            address, port = self.network.address(machine), 3110 + (j - 1) // self.nodes
        else:
            address = "127.0.0.1"
            port = self.http_port + j - 1 if self.http_port else free_port()
        storage: dict[str, Any] = {"url": f"file://{self.root / 'objects'}", "shared": True}
        if self.weed is not None:
            storage = self.weed.storage("lakehouse")
        sections: dict[str, Any] = {
            "gateway": {"host": address, "port": port},
            "nats": {"url": self.nats.url, "replicas": self.replicas},
        }
        if self.network is not None:  # the gateway serves a non-loopback address
            sections["auth"] = {"insecure_no_auth": True}
        settings = load_settings(
            self.root / "none.toml",
            data_dir=self.root / f"h{j}" / "data",
            storage=storage,
            **merged(merged(sections, TUNED if self.tuned else {}), self.overrides),
        )
        return Host(f"h{j}", machine, settings)

    def _provision(self) -> None:
        from lakehouse.platform.bus import STREAMS, connect, provision

        settings = self.members[0].settings

        async def go() -> None:
            nc = await connect(settings, "lakehouse-cluster", deadline=30)
            try:
                await provision(nc.jetstream(), STREAMS, replicas=self.replicas)
            finally:
                await nc.close()

        self.call(lambda: asyncio.run(go()))

    def call(self, fn: Callable[[], T], host: Host | None = None) -> T:
        """``fn()`` where ``host`` (default: the first) reaches the cluster: on its machine
        with a network, here on loopback."""
        host = host or self.members[0]
        if self.network is not None and host.machine is not None:
            return self.network.call(host.machine, fn)
        return fn()

    def spawn(self, host: Host, name: str, *argv: str) -> Proc:
        """``lakehouse <argv>`` on ``host`` with its settings, listed under ``name``."""
        self.count += 1
        proc = self._run(host, list(argv), host.root / f"{name}-{self.count}.log")
        host.procs.setdefault(name, []).append(proc)
        return proc

    def _run(self, host: Host, argv: list[str], log: Path) -> Proc:
        """``lakehouse <argv>`` with ``host``'s settings, on its machine (with a network)."""
        prefix = self.network.prefix(host.machine) if self.network and host.machine else None
        return Proc(argv, project_env(host.settings), log, prefix=prefix)

    def get(self, path: str, host: Host | None = None, timeout: float = 10) -> httpx.Response:
        """GET ``path`` from ``host``'s gateway (default: the first)."""
        host = host or self.members[0]
        return self.call(lambda: httpx.get(host.base + path, timeout=timeout), host)

    def health(self, host: Host | None = None) -> dict[str, Any] | None:
        try:
            r = self.get("/health", host, timeout=5)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def healthy(self, want: dict[str, int] | None = None) -> bool:
        """Whether every gateway answers and reports ``want`` replicas per kind (default:
        every kind on every host)."""
        want = want if want is not None else dict.fromkeys(self.kinds, self.hosts)
        for host in self.members:
            body = self.health(host)
            if body is None:
                return False
            workers = body.get("workers", {})
            if any(workers.get(k, {}).get("replicas", 0) < n for k, n in want.items()):
                return False
        return True

    def wait_healthy(self, timeout: float = 120, want: dict[str, int] | None = None) -> None:
        """Until :meth:`healthy`. A process that exits meanwhile is started again, twice at
        most, as ``lakehouse up``'s supervisor would (a worker starting while the cluster is
        busy can give up on a JetStream call: "nats: timeout"), with a warning carrying the
        end of its log; a third exit fails."""
        restarts = 0

        def ready() -> bool:
            nonlocal restarts
            for host in self.members:
                for name, procs in host.procs.items():
                    for i, p in enumerate(procs):
                        if p.poll() is None:
                            continue
                        tail = p.output()[-3000:]
                        what = f"{host.name} {name} exited ({p.returncode}):\n{tail}"
                        if restarts == 2:
                            raise RuntimeError(what)
                        restarts += 1
                        warnings.warn(f"{what}\nstarting it again", stacklevel=2)
                        procs[i] = self._run(host, p.argv, p.log)
            return self.healthy(want)

        wait_until(ready, timeout=timeout, interval=0.3, what="the cluster to be healthy")

    def kill(self, host: Host, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal ``host``'s ``name`` processes and wait for them (they leave the list)."""
        for proc in host.procs.pop(name, []):
            proc.send_signal(sig)
            proc.wait(30)

    # ---- for the chaos tests ---------------------------------------------------------------
    def as_stack(self, host: Host | int) -> HostStack:
        """Host ``host`` (a :class:`Host` or its 1-based number) as the crash matrix's helpers
        see a :class:`~lakehouse.devtools.stack.Stack`."""
        return HostStack(self, host if isinstance(host, Host) else self.members[host - 1])

    def kill_node(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Signal NATS node ``i`` (1-based) and wait for it; :meth:`restart_node` brings it
        back with its store."""
        assert self.nats is not None
        proc = self.nats.nodes[i - 1].proc
        assert proc is not None and proc.poll() is None, f"NATS node {i} is not running"
        proc.send_signal(sig)
        proc.wait(30)

    def restart_node(self, i: int) -> None:
        assert self.nats is not None
        self.nats.nodes[i - 1].start()

    def stream_cluster(self, stream: str) -> dict[str, Any] | None:
        """The ``cluster`` part of ``stream``'s detail (leader, replicas with ``current``
        and ``lag``) as its leader's monitoring reports it; None while it has no leader."""
        assert self.nats is not None
        leader = self.nats.leader(stream)
        if leader is None:
            return None
        node = self.nats.nodes[leader - 1]
        url = (
            f"http://{node.host}:{self.nats.monitor_ports[leader - 1]}/jsz"
            "?streams=true&config=false"
        )
        try:
            body = self.nats.call(lambda: httpx.get(url, timeout=2).json(), leader)
        except (httpx.HTTPError, ValueError):
            return None
        for acc in body.get("account_details") or []:
            for st in acc.get("stream_detail") or []:
                if st.get("name") == stream and (st.get("cluster") or {}).get("leader"):
                    return dict(st["cluster"])
        return None

    def caught_up(self, stream: str) -> bool:
        """Whether ``stream`` has a leader and every other copy is current (lag 0)."""
        info = self.stream_cluster(stream)
        if info is None:
            return False
        peers = info.get("replicas") or []
        fine = all(r.get("current") and not r.get("offline") and not r.get("lag") for r in peers)
        return len(peers) == self.replicas - 1 and fine

    def revive(self, timeout: float = 120) -> None:
        """Restart every NATS node that is not running and every host's gateway and worker
        kind that has no live process, then wait until healthy (a chaos test's clean slate
        after one that failed half-way)."""
        assert self.nats is not None
        for node in self.nats.nodes:
            if node.proc is None or node.proc.poll() is not None:
                node.start()
        for host in self.members:
            for name in ("gateway", *self.kinds):
                live = [p for p in host.procs.get(name, []) if p.poll() is None]
                host.procs[name] = live
                if not live:
                    argv = ("gateway",) if name == "gateway" else ("worker", name)
                    self.spawn(host, name, *argv)
        self.wait_healthy(timeout)

    def banner(self) -> str:
        from lakehouse.ops.supervisor import banner

        assert self.nats is not None
        gateways = [h.base for h in self.members]
        lines = [
            f"  hosts     {len(self.members)} × ({', '.join(self.kinds)}), "
            f"NATS {self.nodes} nodes R{self.replicas}"
        ]
        for host in self.members:
            where = (
                f" on {self.network.namespace(host.machine)}"
                if self.network and host.machine
                else ""
            )
            lines.append(f"  {host.name:<9} {host.base}{where}   logs {host.root}")
        if self.weed is not None:
            lines.append(
                f"  SeaweedFS master, {self.weed.volumes} volume servers (replication 001), "
                f"filer, S3 {self.weed.endpoint}"
            )
        if self.network is not None:
            first = self.members[0]
            ns = self.network.namespace(first.machine or "")
            lines.append(
                f"  netns     from a host's namespace: ip netns exec {ns} curl {first.base}/health"
            )
        storage = self.members[0].settings.storage_url
        return banner(gateways, self.nats.url, storage, list(self.kinds), "\n".join(lines) + "\n")

    def stop(self, timeout: float = 30) -> None:
        """Every host's processes (SIGTERM, then SIGKILL after ``timeout``), SeaweedFS, NATS,
        then the namespaces. Safe to call twice."""
        procs = [p for h in self.members for group in h.procs.values() for p in group]
        for p in procs:
            p.terminate()
        for p in procs:
            p.stop(timeout)
        for h in self.members:
            h.procs.clear()
        if self.weed is not None:
            self.weed.stop()
            self.weed = None
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
        if self.network is not None:
            self.network.delete()
            self.network = None

    def remove(self) -> None:
        """Stop, then delete everything under ``root``."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _in_root_namespace() -> bool:
    """Whether the calling thread is in this process's own network namespace (that of its
    main thread), not in one a :class:`Network` made."""
    here = os.readlink("/proc/thread-self/ns/net")
    return here == os.readlink(f"/proc/self/task/{os.getpid()}/ns/net")


@dataclass
class HostStack:
    """One host of a :class:`Cluster` with what the crash matrix's helpers use of a
    :class:`~lakehouse.devtools.stack.Stack`: ``base``, ``settings``, ``nats_url``, ``env()``,
    ``cli()``, ``client()``, ``health()`` and ``healthy()`` (every gateway of the cluster).

    With a network, ``base``, ``nats_url``, ``env()`` and ``client()`` refuse to serve a
    thread outside the namespaces (the machine's own namespace would route those addresses
    off the machine): run the helper through :meth:`Cluster.call`. ``cli()`` and the health
    calls go there themselves."""

    cluster: Cluster
    host: Host

    def _inside(self) -> None:
        if self.cluster.network is not None and _in_root_namespace():
            raise RuntimeError(
                f"{self.host.name} is on machine {self.host.machine}: reach it from a thread "
                "inside the network (Cluster.call), never from this namespace"
            )

    @property
    def base(self) -> str:
        self._inside()
        return self.host.base

    @property
    def settings(self) -> Settings:
        return self.host.settings

    @property
    def nats_url(self) -> str:
        self._inside()
        return self.host.settings.nats.url

    def env(self) -> dict[str, str]:
        self._inside()
        return project_env(self.host.settings)

    def cli(
        self, *argv: str, rc: int = 0, timeout: float = 120, env: dict[str, str] | None = None
    ) -> str:
        """Run ``lakehouse <argv>`` on this host's machine with its settings (``env`` on
        top); its stdout (fails unless it exits with ``rc``)."""
        full = {**project_env(self.host.settings), **(env or {})}

        def go() -> str:
            out = run_cli(*argv, env=full, rc=rc, timeout=timeout)
            return out.stdout + (out.stderr if rc else "")

        return self.cluster.call(go, self.host)

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=timeout)

    def health(self) -> dict[str, Any] | None:
        return self.cluster.health(self.host)

    def healthy(self, want: dict[str, int] | None = None) -> bool:
        return self.cluster.healthy(want)
