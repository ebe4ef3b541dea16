"""Fixtures: real nats-server and SeaweedFS S3 on free ports, settings and process factories."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lakehouse.devtools.servers import NatsServer, SeaweedS3, wait_until
from lakehouse.platform.config import Settings, child_env, load_settings
from lakehouse.platform.procs import REPO_ROOT, free_port


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh JetStream server per test (starts in well under a second)."""
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the session; each test gets its own bucket."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test: its own data dir; ``backend='s3'`` gives a fresh bucket."""

    def factory(
        server: NatsServer | None = None,
        backend: str = "file",
        seaweed: SeaweedS3 | None = None,
        **kw: Any,
    ) -> Settings:
        storage: dict[str, Any] = {}
        if backend == "s3":
            assert seaweed is not None, "backend='s3' needs the seaweed fixture"
            storage = {
                "url": f"s3://{unique('bkt')}",
                "s3_endpoint": seaweed.endpoint,
                "s3_access_key": seaweed.access_key,
                "s3_secret_key": seaweed.secret_key,
                "s3_part_size": 5 << 20,
            }
        overrides: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "storage": storage or None,
            "nats": {"url": server.url} if server else None,
            "workers": {"ack_wait": 2.0, "backoff_base": 0.05, "backoff_max": 0.2},
        }
        for key, value in kw.items():
            if isinstance(value, dict) and isinstance(overrides.get(key), dict):
                overrides[key] = {**overrides[key], **value}
            else:
                overrides[key] = value
        return load_settings(tmp_path / "no-such.toml", **overrides)

    return factory


class Proc:
    """A child process of the project (``python -m lakehouse ...``) with captured stderr."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "lakehouse", *argv],
            env=env,
            cwd=REPO_ROOT,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._fh.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start ``lakehouse <argv>`` with the environment of ``settings``; stopped at teardown."""
    procs: list[Proc] = []

    def factory(settings: Settings, *argv: str, env: dict[str, str] | None = None) -> Proc:
        full_env = {**os.environ, **child_env(settings), "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("LAKEHOUSE_CONFIG", None)
        log = tmp_path / f"proc-{len(procs)}-{argv[0]}.log"
        proc = Proc(list(argv), full_env, log)
        procs.append(proc)
        return proc

    yield factory
    for p in procs:
        p.stop()


@pytest.fixture
def gateway(
    make_settings: Callable[..., Settings], spawn: Callable[..., Proc]
) -> Callable[..., str]:
    """Start a real gateway (uvicorn subprocess) for ``settings``; returns its base URL."""

    def factory(settings: Settings) -> str:
        port = free_port()
        settings.gateway.port = port
        proc = spawn(settings, "gateway")
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.popen.poll() is not None:
                raise AssertionError(f"gateway exited:\n{proc.output()}")
            try:
                return httpx.get(f"{base}/docs", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, what="gateway to serve")
        return base

    return factory


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="Crash matrix at the issue's sizes (200K rows, 100K vectors, 20K texts).",
    )


@pytest.fixture
def full(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--full"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.support.recovery import RECORDS

    if RECORDS:
        terminalreporter.section("crash matrix: time to recover")
        for row in RECORDS:
            terminalreporter.write_line(row)
