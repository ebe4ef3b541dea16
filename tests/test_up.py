"""`lakehouse up` as a real subprocess: every worker kind in /health, restart after kill -9,
and SIGINT stops everything with no orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from lakehouse.devtools.servers import eventually
from lakehouse.devtools.stack import project_env, run_cli
from lakehouse.platform.procs import REPO_ROOT, all_cores, free_port
from tests.conftest import unique
from workers import KINDS

pytestmark = pytest.mark.slow

PROBE = "tests.support.probe:ProbeWorker"


async def test_up_supervises_restarts_and_stops_cleanly(tmp_path: Path) -> None:
    http_port, nats_port = free_port(), free_port()
    (tmp_path / "probe").mkdir()
    env = project_env(
        PROBE_STREAM=unique("PROBE_"),
        PROBE_SUBJECT=f"test.{unique()}.work",
        PROBE_DIR=str(tmp_path / "probe"),
    )
    kinds = [*KINDS, PROBE]
    argv = [
        sys.executable, "-m", "lakehouse", "up",
        "--data-dir", str(tmp_path / "data"),
        "--http-port", str(http_port),
        "--nats-port", str(nats_port),
        "--workers", ",".join(kinds),
        "--replicas", f"{PROBE}=2",
        "--replicas", "embed=2",
    ]  # fmt: skip
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:

            async def replicas() -> dict[str, int] | None:
                try:
                    r = await c.get("/health")
                except httpx.HTTPError:
                    return None
                if r.status_code != 200:
                    return None
                return {k: w["replicas"] for k, w in r.json()["workers"].items()}

            def all_up(expected: dict[str, int]) -> Callable[[], object]:
                async def check() -> dict[str, int] | None:
                    got = await replicas()
                    return (
                        got if got and all(got.get(k) == n for k, n in expected.items()) else None
                    )

                return check

            expected = {**dict.fromkeys(KINDS, 1), "probe": 2, "embed": 2}
            await eventually(all_up(expected), timeout=90, interval=0.3, what="every kind healthy")
            # Two embed workers on one machine divide its cores (embed.threads 0).
            embeds = (await c.get("/health")).json()["workers"]["embed"]["instances"]
            assert [i["details"]["threads"] for i in embeds] == [max(1, all_cores() // 2)] * 2
            await eventually(
                lambda: "Lakehouse is up" in (tmp_path / "up.log").read_text(), what="banner"
            )
            assert (tmp_path / "data" / "nats").is_dir()

            # Operator commands reach this stack through the shared connection options (the
            # environment names no NATS, so the default port 4222 would find nothing).
            conn = [
                "--nats-url",
                f"nats://127.0.0.1:{nats_port}",
                "--data-dir",
                str(tmp_path / "data"),
            ]
            report = json.loads(run_cli("verify", "--json", *conn, env=env).stdout)
            assert report["ok"] is True
            assert (
                json.loads(run_cli("dlq", "list", "ingest", "--json", *conn, env=env).stdout) == []
            )
            missing = run_cli("dlq", "show", "ingest", "999999", *conn, rc=2, env=env)
            assert missing.stderr.strip().splitlines() == [
                "error: not found: no dead letter 999999 for kind 'ingest'"
            ]

            health = (await c.get("/health")).json()
            victim = health["workers"]["probe"]["instances"][0]["pid"]
            os.kill(victim, signal.SIGKILL)

            async def restarted() -> bool:
                got = (await c.get("/health")).json()["workers"].get("probe", {})
                pids = {i["pid"] for i in got.get("instances", [])}
                return len(pids) == 2 and victim not in pids

            await eventually(restarted, timeout=60, interval=0.3, what="supervisor restart")
            await eventually(
                lambda: "child exited; restarting" in (tmp_path / "up.log").read_text(),
                what="restart logged",
            )

        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 2 + len(KINDS) + 1  # nats-server, gateway, workers
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"orphans: {alive}"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        log.close()
