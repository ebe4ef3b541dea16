"""Storage chaos: a real SeaweedFS cluster (master, three volume servers, filer, S3 gateway,
every file on two volume servers) under a real stack, volume servers killed with SIGKILL mid
ingest. One of three gone: nothing fails. Two of three gone: the job retries (a bounded S3
timeout, a retryable error, nak with backoff) without registering anything, then finishes
by itself once they are back. Each row ends with the crash matrix's checks: rows exact
(content checksum), `lakehouse verify`, no orphans after `lakehouse gc`, /health ok."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lakehouse.devtools.datagen import generate
from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from lakehouse.devtools.weed import SeaweedCluster
from lakehouse.platform.config import load_settings
from lakehouse.platform.storage.s3 import S3Storage
from tests.support.recovery import record
from tests.test_crash_matrix import (
    csv_truth,
    dataset_recovered,
    history,
    job_state,
    make_stack,
    sql,
    wait_job,
)

KINDS = ("catalog", "ingest", "query")
S3_TIMEOUT = 2.0
"""storage.s3_timeout of these stacks: a PUT that hangs (two volume servers gone) fails in
seconds (a few timeouts: botocore tries 3 times), not the default's minutes."""


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """~14 MB at CI size (20K rows: three multipart parts of 5 MiB), 200K rows with --full."""
    path = tmp_path_factory.mktemp("csv") / "workers.csv"
    generate(path, 200_000 if request.config.getoption("--full") else 20_000, seed=21)
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedCluster]:
    """One cluster for the module (each test runs with every volume server up)."""
    weed = SeaweedCluster(tmp_path_factory.mktemp("weed")).start()
    try:
        yield weed
    finally:
        weed.stop()


@pytest.fixture(scope="module")
def module_stack(
    tmp_path_factory: pytest.TempPathFactory, cluster: SeaweedCluster
) -> Iterator[Stack]:
    # Two volume servers gone fail a job's reads at once (a chunk with no copy left), so its
    # deliveries come fast with the tuned backoff (0.1 s .. 1 s): enough of them to last
    # until the test has seen the failure and started the volume servers again.
    overrides = {"storage": {"s3_timeout": S3_TIMEOUT}, "workers": {"max_deliver": 50}}
    root = tmp_path_factory.mktemp("chaos")
    s = make_stack(root, KINDS, backend="s3", seaweed=cluster, overrides=overrides)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def stack(module_stack: Stack, cluster: SeaweedCluster) -> Iterator[Stack]:
    """The module's stack on the cluster; afterwards every volume server runs again, even
    when the test failed halfway."""
    yield module_stack
    for i in range(cluster.volumes):
        if cluster.procs[cluster.volume_name(i)].poll() is not None:
            cluster.start_volume(i)


def counted(stack: Stack, name: str, csv: Path) -> tuple[int, int]:
    """Rows of ``csv`` missing from the dataset (lost) and rows in it twice (duplicates)."""
    rows, _ = csv_truth(csv)
    [[total, distinct]] = sql(stack, f"SELECT count(*), count(DISTINCT worker_id) FROM {name}")
    return rows - distinct, total - distinct


def handled(stack: Stack, kind: str) -> list[dict[str, Any]]:
    """The ``handled`` log records of the ``kind`` workers (one per message attempt)."""
    out = []
    for proc in stack.procs[kind]:
        for line in proc.output().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("msg") == "handled":
                out.append(rec)
    return out


def gated_body(csv: Path, reached: threading.Event, release: threading.Event) -> Iterator[bytes]:
    """``csv`` in 256 KiB chunks, held after half of it until ``release``: the fault lands
    mid-upload for certain."""
    half = csv.stat().st_size // 2
    sent = 0
    with csv.open("rb") as fh:
        while chunk := fh.read(256 << 10):
            if sent >= half and not reached.is_set():
                reached.set()
                assert release.wait(60), "the test never released the upload"
            sent += len(chunk)
            yield chunk


@pytest.mark.slow
def test_kill_one_of_three_volume_servers_mid_ingest(
    tmp_path: Path,
    big_csv: Path,
    cluster: SeaweedCluster,
    stack: Stack,
    rng: random.Random,
) -> None:
    name = "chaos_one"
    before = len(handled(stack, "ingest"))
    reached, release = threading.Event(), threading.Event()
    posted: dict[str, Any] = {}

    def post() -> None:
        with stack.client() as c:
            r = c.post(
                f"/v1/ingest?name={name}&wait=0", content=gated_body(big_csv, reached, release)
            )
        posted.update(status=r.status_code, body=r.json())

    poster = threading.Thread(target=post)
    poster.start()
    try:
        assert reached.wait(60), "the upload never got half way"
        victim = rng.randrange(cluster.volumes)
        cluster.kill_volume(victim)  # half the CSV is in storage, half still to come
        began = time.monotonic()
    finally:
        release.set()
        poster.join(120)
    assert posted["status"] == 202, posted  # the upload went on: nothing failed
    job = posted["body"]["job_id"]
    state = wait_job(stack, job, timeout=120)
    lost, duplicates = counted(stack, name, big_csv)
    took = time.monotonic() - began
    assert (lost, duplicates) == (0, 0)
    assert [r["outcome"] for r in handled(stack, "ingest")[before:]] == ["acked"]  # no retry
    report = dataset_recovered(stack, tmp_path, name, big_csv, exact=True)
    assert [e["revision"] for e in history(stack, name)] == [1]
    health = stack.health() or {}
    assert health["gateway"]["status"] == "ok" and health["nats"]["connected"], health
    rows = report["datasets"][name]["row_count"]
    assert rows == state["result"]["row_count"]
    cluster.start_volume(victim)  # back on its directory and port, listed by the master
    assert cluster.registered() == cluster.volumes
    record(
        f"storage: kill -9 1 of 3 SeaweedFS volume servers mid-upload (volume{victim})",
        took,
        f"job succeeded, no retry; {rows} rows exact (checksum), verify ok, no orphans",
        lost=lost,
        duplicates=duplicates,
    )


@pytest.mark.slow
def test_kill_two_of_three_volume_servers_mid_ingest(
    tmp_path: Path,
    big_csv: Path,
    cluster: SeaweedCluster,
    stack: Stack,
    rng: random.Random,
) -> None:
    name = "chaos_two"
    before = len(handled(stack, "ingest"))
    with stack.client() as c, big_csv.open("rb") as fh:
        r = c.post(f"/v1/ingest?name={name}&wait=0", content=fh)
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    wait_until(lambda: job_state(stack, job)["state"] == "running", timeout=30, interval=0.02)
    victims = sorted(rng.sample(range(cluster.volumes), 2))
    for i in victims:
        cluster.kill_volume(i)
    killed = time.monotonic()
    assert job_state(stack, job)["state"] == "running"  # killed mid-ingest, not after it
    # Fails cleanly: a retryable error, the message naked for a later delivery; the job is
    # still running (not failed) and the catalog has nothing of it.
    retries = wait_until(
        lambda: [r for r in handled(stack, "ingest")[before:] if r["outcome"] == "retry"],
        timeout=60,
        interval=0.1,
        what="the ingest to fail with a retryable error",
    )
    assert retries[0]["error"].startswith("Unavailable: service unavailable: storage"), retries
    assert job_state(stack, job)["state"] == "running"
    assert httpx.get(f"{stack.base}/v1/catalog/{name}", timeout=10).status_code == 404
    listed = httpx.get(f"{stack.base}/v1/catalog", timeout=10).json()["datasets"]
    assert name not in {d["name"] for d in listed}
    outage = time.monotonic() - killed
    began = time.monotonic()
    for i in victims:
        cluster.start_volume(i)
    state = wait_job(stack, job, timeout=120)  # redelivered after a backoff: no one asked
    lost, duplicates = counted(stack, name, big_csv)
    took = time.monotonic() - began
    assert (lost, duplicates) == (0, 0)
    outcomes = [r["outcome"] for r in handled(stack, "ingest")[before:]]
    assert outcomes[-1] == "acked" and "dead-lettered" not in outcomes, outcomes
    report = dataset_recovered(stack, tmp_path, name, big_csv, exact=True)
    assert [e["revision"] for e in history(stack, name)] == [1]  # registered once
    health = stack.health() or {}
    assert health["gateway"]["status"] == "ok" and health["nats"]["connected"], health
    rows = report["datasets"][name]["row_count"]
    assert rows == state["result"]["row_count"]
    record(
        f"storage: kill -9 2 of 3 SeaweedFS volume servers mid-ingest, back after {outage:.0f} s",
        took,
        f"{outcomes.count('retry')} retries, nothing registered meanwhile; then {rows} rows "
        "exact (checksum), 1 revision, verify ok, no orphans",
        lost=lost,
        duplicates=duplicates,
    )


def test_s3_requests_wait_at_most_storage_s3_timeout(tmp_path: Path) -> None:
    """What makes the retry above possible: the client's timeouts come from the settings."""

    def config(**storage: Any) -> Any:
        section = {"url": "s3://bucket", "s3_endpoint": "http://127.0.0.1:9", **storage}
        settings = load_settings(tmp_path / "none.toml", storage=section)
        return S3Storage.from_settings(settings).client.meta.config

    default = config()
    assert (default.connect_timeout, default.read_timeout) == (5.0, 30.0)
    short = config(s3_timeout=S3_TIMEOUT)
    assert (short.connect_timeout, short.read_timeout) == (S3_TIMEOUT, S3_TIMEOUT)
