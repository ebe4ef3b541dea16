"""Starting and stopping the project's processes, for the tests and the benchmark.

:class:`Proc` is one ``python -m lakehouse ...`` child with its output in a log file.
:class:`Stack` is a whole stack on free ports under one directory, started one of two ways:

- :meth:`Stack.start`: a real nats-server, the gateway and one process per worker kind, each
  a :class:`Proc` the test can kill, restart or add replicas to (``stack.spawn``);
- :meth:`Stack.up`: ``lakehouse up`` as one process, as an operator runs it (the benchmark).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lakehouse.devtools.servers import NatsServer, S3Endpoint, wait_until
from lakehouse.platform.config import Settings, child_env, load_settings, merged
from lakehouse.platform.procs import REPO_ROOT, free_port
from schemas.subjects import WORKER_KINDS

TUNED: dict[str, Any] = {
    "workers": {"ack_wait": 5.0, "backoff_base": 0.1, "backoff_max": 1.0},
    "catalog": {"gc_interval": 0},
}
"""Test settings: a lost message comes back in seconds, no periodic orphan sweep."""


def project_env(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without ``LAKEHOUSE_*`` (a developer's own settings must
    not leak into a test), plus what makes a child see ``settings``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    if settings is not None:
        env.update(child_env(settings))
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class Proc:
    """A child process ``python -m lakehouse <argv>`` (run from the repository root, behind
    ``prefix``: e.g. a network namespace's ``ip netns exec``), its stdout and stderr in
    ``log``. Offers Popen's ``pid``, ``returncode``, ``poll``, ``send_signal``, ``wait`` and
    ``kill``."""

    def __init__(
        self, argv: list[str], env: dict[str, str], log: Path, prefix: list[str] | None = None
    ) -> None:
        self.argv = argv
        self.log = log
        self.terminated = False
        self.forced = False  # SIGKILLed by stop() after ignoring SIGTERM
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as fh:  # the child keeps its own copy of the descriptor
            self.popen = subprocess.Popen(
                [*(prefix or []), sys.executable, "-m", "lakehouse", *argv],
                env=env,
                cwd=REPO_ROOT,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def kill(self) -> None:
        self.popen.kill()

    def wait(self, timeout: float | None = 30) -> int:
        return self.popen.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM once (a second one makes the gateway skip its graceful shutdown)."""
        if not self.terminated and self.popen.poll() is None:
            self.terminated = True
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
        self.terminate()
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.forced = True
            self.popen.kill()
            return self.popen.wait()


def serving(proc: Proc, settings: Settings) -> str:
    """Wait until the gateway ``proc``, started with ``settings``, serves; its base URL
    (https, checked against ``tls.ca_file``, when it has a certificate)."""
    from lakehouse.platform.tlsctx import client_context

    tls = settings.tls
    scheme = "https" if tls.cert_file else "http"
    base = f"{scheme}://127.0.0.1:{settings.gateway.port}"
    verify = client_context(tls) or True

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited:\n{proc.output()}")
        try:
            return httpx.get(f"{base}/docs", timeout=1, verify=verify).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=30, what="gateway to serve")
    return base


def run_cli(
    *argv: str, env: dict[str, str], rc: int | None = 0, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``lakehouse <argv>`` to completion with ``env``; fails unless it exits with ``rc``
    (``None``: any status, for the caller to check)."""
    out = subprocess.run(
        [sys.executable, "-m", "lakehouse", *argv],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert rc is None or out.returncode == rc, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


@dataclass
class Stack:
    root: Path
    backend: str = "file"
    seaweed: S3Endpoint | None = None  # SeaweedS3, or a SeaweedCluster (lakehouse.devtools.weed)
    overrides: dict[str, Any] = field(default_factory=dict)
    procs: dict[str, list[Proc]] = field(default_factory=dict)
    count: int = 0
    nats: NatsServer | None = None
    replicas: dict[str, int] | None = None  # set by up(): what `lakehouse up` runs
    tuned: bool = True  # short ack wait and backoff, no orphan sweep; False: shipped defaults

    def configure(self, nats_url: str) -> Settings:
        """Settings of this stack: its data dir, storage backend, a free gateway port."""
        storage: dict[str, Any] | None = None
        if self.backend == "s3":
            assert self.seaweed is not None, "backend='s3' needs a SeaweedS3"
            storage = self.seaweed.storage(f"stack{os.getpid()}{free_port()}", part_size=5 << 20)
        port = free_port()
        self.settings: Settings = load_settings(
            self.root / "none.toml",
            data_dir=self.root / "data",
            nats={"url": nats_url},
            **merged(
                {"gateway": {"port": port}, "storage": storage, **(TUNED if self.tuned else {})},
                self.overrides,  # a "storage" section adds to the S3 one (e.g. s3_timeout)
            ),
        )
        self.base = f"http://127.0.0.1:{self.settings.gateway.port}"
        return self.settings

    def start(self, kinds: tuple[str, ...] = ("catalog", "ingest", "query")) -> Stack:
        """A nats-server, the gateway and one process per kind, each killable on its own."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.nats = NatsServer(self.root / "nats").start()
        self.configure(self.nats.url)
        self.spawn("gateway", "gateway")
        for kind in kinds:
            self.spawn(kind, "worker", kind)
        self.wait_healthy()
        return self

    def up(
        self, replicas: dict[str, int] | None = None, kinds: tuple[str, ...] = WORKER_KINDS
    ) -> Stack:
        """``lakehouse up`` as one process: its own nats-server, the gateway and each worker
        kind of ``kinds`` (default every kind; ``replicas`` processes of a kind, default 1),
        restarted when they die."""
        self.root.mkdir(parents=True, exist_ok=True)
        nats_port = free_port()
        self.configure(f"nats://127.0.0.1:{nats_port}")
        self.replicas = {**dict.fromkeys(kinds, 1), **(replicas or {})}
        argv = [
            "up",
            "--data-dir", str(self.settings.data_dir),
            "--http-port", str(self.settings.gateway.port),
            "--nats-port", str(nats_port),
        ]  # fmt: skip
        for kind, n in (replicas or {}).items():
            argv += ["--replicas", f"{kind}={n}"]
        if set(kinds) != set(WORKER_KINDS):
            argv += ["--workers", ",".join(kinds)]
        self.spawn("up", *argv)
        self.wait_healthy(timeout=120)
        return self

    @property
    def nats_url(self) -> str:
        return self.settings.nats.url

    def env(self) -> dict[str, str]:
        return project_env(self.settings)

    def spawn(self, name: str, *argv: str, env: dict[str, str] | None = None) -> Proc:
        """Start ``lakehouse <argv>`` with this stack's settings (``env`` on top), listed
        under ``name`` in :attr:`procs`."""
        self.count += 1
        proc = Proc(
            list(argv), {**self.env(), **(env or {})}, self.root / f"{name}-{self.count}.log"
        )
        self.procs.setdefault(name, []).append(proc)
        return proc

    def health(self) -> dict[str, Any] | None:
        try:
            r = httpx.get(f"{self.base}/health", timeout=5)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def healthy(self, want: dict[str, int] | None = None) -> bool:
        """Whether /health shows at least ``want`` replicas per kind (default: what this
        stack started)."""
        body = self.health()
        if body is None:
            return False
        if want is None:
            started = {k: len(v) for k, v in self.procs.items() if k not in ("gateway", "up")}
            want = self.replicas or started
        workers = body["workers"]
        return all(workers.get(k, {}).get("replicas", 0) >= n for k, n in want.items())

    def wait_healthy(self, timeout: float = 60) -> None:
        """Until :meth:`healthy`; on a timeout or a process that exited, everything is
        stopped and the error names the process and ends with its log."""

        def ready() -> bool:
            for name, procs in self.procs.items():
                for p in procs:
                    if p.poll() is not None:
                        tail = p.output()[-3000:]
                        raise RuntimeError(f"{name} exited ({p.returncode}) starting:\n{tail}")
            return self.healthy()

        try:
            wait_until(ready, timeout=timeout, interval=0.2, what="stack to be healthy")
        except BaseException:
            self.stop()
            raise

    def pids(self, kind: str) -> list[int]:
        """Process ids of the gateway or of a worker kind's replicas, from /health."""
        body = self.health() or {}
        if kind == "gateway":
            return [int(body["gateway"]["pid"])]
        return [int(i["pid"]) for i in body["workers"].get(kind, {}).get("instances", [])]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        for proc in self.procs.pop(name, []):
            proc.send_signal(sig)
            proc.wait(30)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to every process at once, then wait for each (SIGKILL after ``timeout``,
        with a warning carrying the end of its log: a graceful stop takes about a second);
        then the nats-server. Safe to call twice."""
        procs = [(name, p) for name, group in self.procs.items() for p in group]
        for _, p in procs:
            p.terminate()
        deadline = time.monotonic() + timeout
        for name, p in procs:
            p.stop(max(0.1, deadline - time.monotonic()))
            if p.forced:
                tail = "\n".join(p.output().splitlines()[-15:])
                warnings.warn(
                    f"{name} did not stop on SIGTERM in {timeout:g} s:\n{tail}", stacklevel=2
                )
        self.procs.clear()
        if self.nats is not None:
            self.nats.stop()

    def cli(
        self, *argv: str, rc: int = 0, timeout: float = 120, env: dict[str, str] | None = None
    ) -> str:
        """Run ``lakehouse <argv>`` against this stack (``env`` on top of its settings); its
        stdout (fails unless it exits with ``rc``)."""
        out = run_cli(*argv, env={**self.env(), **(env or {})}, rc=rc, timeout=timeout)
        return out.stdout + (out.stderr if rc else "")

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=timeout)
