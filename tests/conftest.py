"""Fixtures: real nats-server and SeaweedFS S3 on free ports, settings, project processes
(``spawn``, ``gateway``), whole stacks (``stack``, ``make_stack``) and one worker kind in
the test's own event loop (``harness``)."""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lakehouse.devtools import testing
from lakehouse.devtools.servers import NatsServer, SeaweedS3
from lakehouse.devtools.stack import Proc, Stack, project_env, serving
from lakehouse.platform.config import Settings, load_settings, merged
from lakehouse.platform.procs import free_port


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


def settings_under(
    root: Path,
    server: NatsServer | None = None,
    backend: str = "file",
    seaweed: SeaweedS3 | None = None,
    **kw: Any,
) -> Settings:
    """Settings with their own data dir under ``root``; ``backend='s3'`` gives a fresh
    bucket; ``kw`` overrides sections one level deep."""
    storage: dict[str, Any] = {}
    if backend == "s3":
        assert seaweed is not None, "backend='s3' needs the seaweed fixture"
        storage = seaweed.storage(unique("bkt"), part_size=5 << 20)
    overrides: dict[str, Any] = {
        "data_dir": root / "data",
        "storage": storage or None,
        "nats": {"url": server.url} if server else None,
        "workers": testing.FAST["workers"],
    }
    return load_settings(root / "no-such.toml", **merged(overrides, kw))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test: its own data dir; ``backend='s3'`` gives a fresh bucket."""
    return functools.partial(settings_under, tmp_path)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start ``lakehouse <argv>`` with the environment of ``settings``; stopped at teardown."""
    procs: list[Proc] = []

    def factory(settings: Settings, *argv: str, env: dict[str, str] | None = None) -> Proc:
        log = tmp_path / f"proc-{len(procs)}-{argv[0]}.log"
        proc = Proc(list(argv), project_env(settings, **(env or {})), log)
        procs.append(proc)
        return proc

    yield factory
    for p in procs:
        p.terminate()
    for p in procs:
        p.stop()


@pytest.fixture
def gateway(
    make_settings: Callable[..., Settings], spawn: Callable[..., Proc]
) -> Callable[..., str]:
    """Start a real gateway (uvicorn subprocess) for ``settings``; returns its base URL."""

    def factory(settings: Settings) -> str:
        settings.gateway.port = free_port()
        return serving(spawn(settings, "gateway"), settings)

    return factory


KINDS = ("catalog", "ingest", "query")


@pytest.fixture
def make_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """``make_stack(kinds, overrides=..., backend="s3")``: a running :class:`Stack` under
    this test's tmp dir (``backend="s3"``: on the session's SeaweedFS); all stopped at
    teardown."""
    started: list[Stack] = []

    def factory(
        kinds: tuple[str, ...] = KINDS,
        *,
        overrides: dict[str, Any] | None = None,
        backend: str = "file",
        root: Path | None = None,
    ) -> Stack:
        seaweed = request.getfixturevalue("seaweed") if backend == "s3" else None
        s = Stack(
            root or tmp_path / f"stack{len(started)}",
            backend=backend,
            seaweed=seaweed,
            overrides=overrides or {},
        )
        started.append(s)
        return s.start(tuple(kinds))

    yield factory
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def _shared_stacks() -> Iterator[dict[str, Stack]]:
    stacks: dict[str, Stack] = {}
    yield stacks
    for s in stacks.values():
        s.stop()


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A running stack (gateway, nats-server, one process per kind), configured by the
    nearest ``@pytest.mark.stack(kinds=..., overrides=..., backend=..., shared=...)`` and an
    indirect parameter: a backend name, or a dict of those keywords, e.g.
    ``@pytest.mark.parametrize("stack", ["file", "s3"], indirect=True)``. Fresh for each
    test, unless ``shared=True``: then one per module and configuration (its tests must not
    depend on each other's data)."""
    marker = request.node.get_closest_marker("stack")
    config: dict[str, Any] = dict(marker.kwargs) if marker else {}
    param = getattr(request, "param", None)
    if isinstance(param, str):
        config["backend"] = param
    elif isinstance(param, dict):
        config.update(param)
    shared = config.pop("shared", False)
    if not shared:
        yield request.getfixturevalue("make_stack")(**config)
        return
    stacks: dict[str, Stack] = request.getfixturevalue("_shared_stacks")
    key = repr(sorted(config.items()))
    if key not in stacks:
        root = request.getfixturevalue("tmp_path_factory").mktemp("stack")
        seaweed = request.getfixturevalue("seaweed") if config.get("backend") == "s3" else None
        kinds = tuple(config.pop("kinds", KINDS))
        stacks[key] = Stack(root, seaweed=seaweed, **config).start(kinds)
    yield stacks[key]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[testing.Harness]:
    """A real nats-server with the streams provisioned; ``async with harness.worker(kind)``
    runs that kind's handlers in this test's event loop (see lakehouse.devtools.testing)."""
    async with testing.harness(tmp_path / "harness") as h:
        yield h


LONGEST_FIRST = (
    "test_chaos.py",
    "test_crash_matrix.py",
    "test_crash_matrix_vectors.py",
    "test_bench.py",
    "test_chaos_storage.py",
    "test_openapi.py",
    "test_upsert.py",
    "test_bench_concurrency.py",
    "test_vector_recovery.py",
    "test_cluster.py",
    "test_vectors.py",
    "test_web.py",
    "test_hybrid.py",
    "test_replay.py",
    "test_secure.py",
)
"""The longest files, longest first (their total in a CI run: 177 s … 19 s): ``make test``'s
two processes take whole files in this order (``--no-loadscope-reorder``), so no long file is
left to run alone at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (:data:`LONGEST_FIRST`), then the rest as collected. Every test
    on SeaweedFS (a parameter "s3", or the ``seaweed`` fixture) is slow: the server alone
    takes seconds to start."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda it: (rank.get(it.path.name, len(rank)), order[id(it)]))
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec else ()
        s3 = any(isinstance(v, str) and v == "s3" for v in params)
        if s3 or "seaweed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="Crash matrix at the issue's sizes (200K rows, 100K vectors, 20K texts).",
    )


@pytest.fixture
def full(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--full"))


def pytest_sessionstart(session: pytest.Session) -> None:
    from tests.support import recovery

    if not hasattr(session.config, "workerinput"):  # the run itself, not an -n worker
        recovery.reset()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.support import recovery

    rows = recovery.rows()
    if rows:
        terminalreporter.section("crash matrix and chaos: time to recover")
        for line in recovery.table(rows).splitlines():
            terminalreporter.write_line(line)


@pytest.fixture
def rng() -> random.Random:
    """The crash matrix's seeded randomness (where a fault lands)."""
    return random.Random(20261126)
