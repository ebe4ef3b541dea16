"""A stack for the benchmark: ``lakehouse up`` on free ports in a temp dir (or a running one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from lakehouse.platform.procs import REPO_ROOT, free_port


@dataclass
class BenchStack:
    root: Path
    replicas: dict[str, int] = field(default_factory=dict)
    base: str = ""
    nats_url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BenchStack:
        http, nats_port = free_port(), free_port()
        self.base, self.nats_url = f"http://127.0.0.1:{http}", f"nats://127.0.0.1:{nats_port}"
        argv = [
            sys.executable, "-m", "lakehouse", "up",
            "--data-dir", str(self.root / "data"),
            "--http-port", str(http),
            "--nats-port", str(nats_port),
        ]  # fmt: skip
        for kind, n in self.replicas.items():
            argv += ["--replicas", f"{kind}={n}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
        env["LAKEHOUSE_VECTORS__SNAPSHOT_EVERY"] = "3600"
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "stack.log").open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lakehouse up exited; see {self.root / 'stack.log'}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).json().get("status") == "ok":
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("the stack did not become healthy in 120 s")

    def pids(self, kind: str) -> list[int]:
        body = httpx.get(f"{self.base}/health", timeout=5).json()
        if kind == "gateway":
            return [int(body["gateway"]["pid"])]
        return [int(i["pid"]) for i in body["workers"].get(kind, {}).get("instances", [])]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class PeakRss:
    """Samples the summed RSS of some processes every 20 ms until stopped."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        total = 0
        for p in self.procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
