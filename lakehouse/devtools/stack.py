"""A whole stack for integration tests: real nats-server, gateway and worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lakehouse.devtools.servers import NatsServer, SeaweedS3, wait_until
from lakehouse.platform.config import Settings, child_env, load_settings
from lakehouse.platform.procs import REPO_ROOT, free_port


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``, one level deep (a section override keeps the other keys)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class Stack:
    root: Path
    backend: str = "file"
    seaweed: SeaweedS3 | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    count: int = 0

    def start(self, kinds: tuple[str, ...] = ("catalog", "ingest", "query")) -> Stack:
        self.nats = NatsServer(self.root / "nats").start()
        storage: dict[str, Any] | None = None
        if self.backend == "s3":
            assert self.seaweed is not None
            storage = {
                "url": f"s3://stack{os.getpid()}{free_port()}",
                "s3_endpoint": self.seaweed.endpoint,
                "s3_access_key": self.seaweed.access_key,
                "s3_secret_key": self.seaweed.secret_key,
                "s3_part_size": 5 << 20,
            }
        port = free_port()
        self.settings: Settings = load_settings(
            self.root / "none.toml",
            data_dir=self.root / "data",
            storage=storage,
            nats={"url": self.nats.url},
            **merged(
                {
                    "gateway": {"port": port},
                    "workers": {"ack_wait": 5.0, "backoff_base": 0.1, "backoff_max": 1.0},
                    "catalog": {"gc_interval": 0},
                },
                self.overrides,
            ),
        )
        self.base = f"http://127.0.0.1:{port}"
        self.spawn("gateway", "gateway")
        for kind in kinds:
            self.spawn(kind, "worker", kind)
        wait_until(self.healthy, timeout=60, interval=0.2, what="stack to be healthy")
        return self

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
        return {**env, **child_env(self.settings), "PYTHONUNBUFFERED": "1"}

    def spawn(
        self, name: str, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.count += 1
        log = (self.root / f"{name}-{self.count}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "lakehouse", *argv],
            env={**self.env(), **(env or {})},
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.setdefault(name, []).append(proc)
        return proc

    def healthy(self, want: dict[str, int] | None = None) -> bool:
        try:
            r = httpx.get(f"{self.base}/health", timeout=5)
        except httpx.HTTPError:
            return False
        if r.status_code != 200:
            return False
        workers = r.json()["workers"]
        want = want or {k: len(v) for k, v in self.procs.items() if k != "gateway"}
        return all(workers.get(k, {}).get("replicas", 0) >= n for k, n in want.items())

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        for proc in self.procs.pop(name, []):
            proc.send_signal(sig)
            proc.wait(30)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        for procs in self.procs.values():
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
        for procs in self.procs.values():
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        self.nats.stop()

    def cli(self, *argv: str, rc: int = 0, timeout: float = 120) -> str:
        """Run ``lakehouse <argv>`` against this stack; its stdout (fails unless it exits
        with ``rc``)."""
        out = subprocess.run(
            [sys.executable, "-m", "lakehouse", *argv],
            env=self.env(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == rc, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
        return out.stdout + (out.stderr if rc else "")

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=timeout)
