"""SeaweedFS as a real multi-server store: :class:`SeaweedCluster`.

One ``weed master``, ``volumes`` ``weed volume`` servers (each its own directory and port),
one ``weed filer`` and one ``weed s3`` gateway with an access key: separate processes, each
with ``GOMEMLIMIT=256MiB`` and its own log file under ``root``. Every file is written with
replication ``001`` (two copies on two volume servers), so the store keeps working with
one volume server gone; with two of three gone, a read of a chunk with no copy left fails at
once and a PUT hangs (no error, for minutes) until one comes back.

For the storage chaos tests (:meth:`SeaweedCluster.kill_volume`,
:meth:`SeaweedCluster.start_volume`) and ``lakehouse cluster``. ``prefix`` runs every server
behind an argv prefix (a network namespace's ``ip netns exec``); when the tests' own
namespace cannot reach ``host`` (``reachable=False``), the readiness checks run through the
same prefix as ``python -c``. The single-process server for the rest of the tests is
:class:`lakehouse.devtools.servers.SeaweedS3`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakehouse.devtools.servers import S3Endpoint, wait_until
from lakehouse.platform.procs import find_binary, free_port

GOMEMLIMIT = "256MiB"
FILER_GRACE = 2.0
"""Seconds the filer gets to stop on SIGTERM before SIGKILL."""

HTTP_PROBE = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
    sys.stdout.write(r.read().decode())
"""
"""``python -c`` through the prefix: print the body of GET argv[1] (argv[2]: timeout)."""

S3_PROBE = """
import sys, boto3
from botocore.config import Config
endpoint, access, secret, timeout = sys.argv[1:5]
c = boto3.client(
    "s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                  connect_timeout=float(timeout), read_timeout=float(timeout)),
)
try:
    c.create_bucket(Bucket="readiness-probe")
except c.exceptions.BucketAlreadyOwnedByYou:
    pass
c.put_object(Bucket="readiness-probe", Key="ok", Body=b"round trip")
assert c.get_object(Bucket="readiness-probe", Key="ok")["Body"].read() == b"round trip"
"""
"""``python -c`` through the prefix: exit 0 once an object PUT+GET round-trips (what
:meth:`SeaweedCluster._round_trip` does in this process when ``host`` is reachable)."""


@dataclass
class SeaweedCluster(S3Endpoint):
    """A SeaweedFS cluster under ``root`` (``master/``, ``volume<i>/``, ``filer/``,
    ``s3.json``, ``<server>.log``), every server bound to and advertising ``host``.

    :meth:`start` returns once an object PUT+GET round-trips through S3 (plain HTTP, the
    one identity ``access_key``/``secret_key`` with every action); :meth:`stop` stops s3,
    filer, volumes, master in that order (SIGKILL after ``stop_timeout``) and leaves the data.
    ``procs`` maps ``master``, ``volume<i>``, ``filer``, ``s3`` to their processes; ``ports``
    maps the same names to their HTTP ports (gRPC is each port + 10000): free ones are picked
    for the names missing when :meth:`start` runs (a restart on the same ``root`` passes the
    old ones)."""

    root: Path
    volumes: int = 3
    host: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)
    reachable: bool = True
    access_key: str = "lakehouse-test"
    secret_key: str = "lakehouse-test-secret"
    # Volume slots per server: the master grows volumes until none is left. A bucket is a
    # collection whose first write grows 6 volumes x 2 copies, so 3 x 16 slots hold the
    # readiness probe's bucket and 3 more; each volume is full (read-only) at volume_size_mb.
    volume_max: int = 16
    volume_size_mb: int = 32
    stop_timeout: float = 10.0
    ca_file: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def master(self) -> str:
        """``host:port`` of the master (what volume servers and the filer are given)."""
        return f"{self.host}:{self.ports['master']}"

    def volume_name(self, i: int) -> str:
        return f"volume{i}"

    # ---- starting ------------------------------------------------------------------------
    def start(self) -> SeaweedCluster:
        """Every server, then wait until all volume servers have registered with the master
        and an object round-trips through S3 (60 s at most)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._pick_ports()
        config = {
            "identities": [
                {
                    "name": "lakehouse",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.root / "s3.json").write_text(json.dumps(config, indent=2))
        try:
            # In turn: a volume server or filer that finds no master leader retries only
            # after seconds, so each waits for what it needs.
            self._spawn("master", self._master_argv())
            wait_until(
                lambda: self._alive() and self.leader(),
                timeout=60,
                interval=0.1,
                what="the SeaweedFS master to lead",
            )
            for i in range(self.volumes):
                self._spawn(self.volume_name(i), self._volume_argv(i))
            self._spawn("filer", self._filer_argv())
            self._spawn("s3", self._s3_argv())
            wait_until(
                lambda: self._alive() and self.registered() == self.volumes,
                timeout=60,
                interval=0.1,
                what=f"{self.volumes} SeaweedFS volume servers to register",
            )
            wait_until(
                lambda: self._alive() and self._round_trip(),
                timeout=60,
                interval=0.1,
                what="SeaweedFS S3 to round-trip an object",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _pick_ports(self) -> None:
        """Free ports whose gRPC port (+10000) is free too, none of them another's gRPC port."""
        names = ["master", *(self.volume_name(i) for i in range(self.volumes)), "filer", "s3"]
        taken = set(self.ports.values()) | {p + 10000 for p in self.ports.values()}
        for name in names:
            if name in self.ports:
                continue
            while True:
                p = free_port(avoid_plus=10000)
                if p not in taken and p + 10000 not in taken:
                    break
            self.ports[name] = p
            taken |= {p, p + 10000}

    def _common(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {**env, "GOMEMLIMIT": GOMEMLIMIT}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("ab") as log:  # appended to across restarts
            proc = subprocess.Popen(
                [*self.prefix, find_binary("weed"), *argv],
                env=self._common(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        self.procs[name] = proc
        return proc

    def _master_argv(self) -> list[str]:
        (self.root / "master").mkdir(exist_ok=True)
        return [
            "master",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-port={self.ports['master']}",
            f"-mdir={self.root / 'master'}",
            "-defaultReplication=001",
            f"-volumeSizeLimitMB={self.volume_size_mb}",
            "-telemetry=false",
        ]

    def _volume_argv(self, i: int) -> list[str]:
        name = self.volume_name(i)
        (self.root / name).mkdir(exist_ok=True)
        return [
            "volume",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-port={self.ports[name]}",
            f"-dir={self.root / name}",
            f"-master={self.master}",
            f"-max={self.volume_max}",
            "-preStopSeconds=0",  # SIGTERM: stop at once (default: heartbeats off, 10 s wait)
        ]

    def _filer_argv(self) -> list[str]:
        (self.root / "filer").mkdir(exist_ok=True)
        return [
            "filer",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-port={self.ports['filer']}",
            f"-master={self.master}",
            "-defaultReplicaPlacement=001",
            f"-defaultStoreDir={self.root / 'filer'}",
        ]

    def _s3_argv(self) -> list[str]:
        return [
            "s3",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-port={self.ports['s3']}",
            f"-filer={self.host}:{self.ports['filer']}",
            f"-config={self.root / 's3.json'}",
            "-port.iceberg=0",
            "-port.lance=0",
        ]

    def _alive(self, *names: str) -> bool:
        """True, or an error naming a server of ``names`` (default: all) that exited, ending
        with its log."""
        for name in names or tuple(self.procs):
            proc = self.procs[name]
            if proc.poll() is not None:
                log = self.root / f"{name}.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"weed {name} exited ({proc.returncode}):\n{tail}")
        return True

    # ---- probes --------------------------------------------------------------------------
    def _probe(self, code: str, *args: str, timeout: float) -> str | None:
        """Run ``python -c code args`` here or, when ``host`` cannot be reached from here,
        through ``prefix``; its stdout, or None when it failed."""
        argv = [sys.executable, "-c", code, *args]
        if not self.reachable:
            argv = [*self.prefix, *argv]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            return None
        return out.stdout if out.returncode == 0 else None

    def _get(self, url: str, timeout: float = 2.0) -> str | None:
        """The body of GET ``url``, or None."""
        if not self.reachable:
            return self._probe(HTTP_PROBE, url, str(timeout), timeout=timeout)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return str(r.read().decode())
        except (OSError, urllib.error.URLError):
            return None

    def _round_trip(self, timeout: float = 5.0) -> bool:
        args = (self.endpoint, self.access_key, self.secret_key, str(timeout))
        if not self.reachable:
            return self._probe(S3_PROBE, *args, timeout=2 * timeout) is not None
        c = self.client(timeout)
        try:
            try:
                c.create_bucket(Bucket="readiness-probe")
            except c.exceptions.BucketAlreadyOwnedByYou:
                pass
            c.put_object(Bucket="readiness-probe", Key="ok", Body=b"round trip")
            body = c.get_object(Bucket="readiness-probe", Key="ok")["Body"].read()
        except Exception:
            return False
        return bool(body == b"round trip")

    def leader(self) -> bool:
        """Whether the master has become the leader (a new one elects itself in ~1.5 s)."""
        body = self._get(f"http://{self.master}/cluster/status")
        try:
            return bool(body and json.loads(body).get("IsLeader"))
        except ValueError:
            return False

    def topology(self) -> dict[str, Any] | None:
        """The master's ``/dir/status`` (its view of data centers, racks and volume servers),
        or None when it does not answer."""
        body = self._get(f"http://{self.master}/dir/status")
        if body is None:
            return None
        try:
            topology: dict[str, Any] = json.loads(body)["Topology"]
        except (ValueError, KeyError):
            return None
        return topology

    def data_nodes(self) -> set[str]:
        """``host:port`` of every volume server registered with the master now."""
        topology = self.topology() or {}
        return {
            node["Url"]
            for dc in topology.get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        }

    def registered(self) -> int:
        """How many of this cluster's volume servers the master knows now."""
        mine = {f"{self.host}:{self.ports[self.volume_name(i)]}" for i in range(self.volumes)}
        return len(mine & self.data_nodes())

    # ---- faults --------------------------------------------------------------------------
    def kill_volume(self, i: int) -> None:
        """SIGKILL volume server ``i`` (0-based) and reap it."""
        proc = self.procs[self.volume_name(i)]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    def start_volume(self, i: int, timeout: float = 60) -> None:
        """Start volume server ``i`` again on its directory and port; return once the master
        lists it again."""
        name = self.volume_name(i)
        old = self.procs.get(name)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"weed {name} is still running")
        self._spawn(name, self._volume_argv(i))
        url = f"{self.host}:{self.ports[name]}"
        wait_until(
            lambda: self._alive(name) and url in self.data_nodes(),
            timeout=timeout,
            interval=0.1,
            what=f"weed {name} to re-register with the master",
        )

    # ---- stopping ------------------------------------------------------------------------
    def stop(self) -> None:
        """s3, filer, volumes, master: SIGTERM, then SIGKILL after ``stop_timeout`` (the
        filer after at most :data:`FILER_GRACE`: it often hangs in its graceful gRPC stop,
        master or not); then the unix sockets weed leaves in /tmp for these ports. Safe to
        call twice; the data stays under ``root``."""
        volumes = [n for n in self.procs if n.startswith("volume")]
        groups = [(["s3"], self.stop_timeout), (["filer"], min(FILER_GRACE, self.stop_timeout))]
        groups += [(volumes, self.stop_timeout), (["master"], self.stop_timeout)]
        for names, timeout in groups:
            procs = [q for n in names if (q := self.procs.get(n)) and q.poll() is None]
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for proc in procs:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for port in self.ports.values():
            for p in (port, port + 10000):
                for sock in Path("/tmp").glob(f"seaweedfs-*-{p}.sock"):
                    sock.unlink(missing_ok=True)
