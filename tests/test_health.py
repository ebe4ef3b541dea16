"""GET /health on a real gateway: worker replicas over NATS, 503 without NATS, no secrets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from lakehouse.devtools.servers import NatsServer, SeaweedS3, eventually
from lakehouse.devtools.stack import Proc
from lakehouse.platform.config import Settings
from lakehouse.platform.procs import free_port
from tests.conftest import unique

PROBE = "tests.support.probe:ProbeWorker"


@pytest.fixture
def probe_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "probe").mkdir()
    return {
        "PROBE_STREAM": unique("PROBE_"),
        "PROBE_SUBJECT": f"test.{unique()}.work",
        "PROBE_DIR": str(tmp_path / "probe"),
    }


@pytest.mark.slow
async def test_health_counts_live_replicas(
    nats_server: NatsServer,
    make_settings: Callable[..., Settings],
    gateway: Callable[[Settings], str],
    spawn: Callable[..., Proc],
    probe_env: dict[str, str],
) -> None:
    settings = make_settings(nats_server)
    base = gateway(settings)
    workers = [spawn(settings, "worker", PROBE, env=probe_env) for _ in range(2)]
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:

        def replicas(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                r = await c.get("/health")
                got = r.json()["workers"].get("probe", {}).get("replicas") if r.is_success else 0
                return bool(got == n)  # exactly n: a count on its way up is not enough

            return check

        assert await eventually(replicas(2), timeout=30, what="two probe replicas")
        body = (await c.get("/health")).json()
        assert body["gateway"]["status"] == "ok"
        assert body["nats"]["connected"] is True
        pids = sorted(i["pid"] for i in body["workers"]["probe"]["instances"])
        assert pids == sorted(w.pid for w in workers)
        workers[0].stop()
        assert await eventually(replicas(1), timeout=30, what="one probe replica")


async def test_health_is_503_when_nats_is_unreachable(
    make_settings: Callable[..., Settings], gateway: Callable[[Settings], str]
) -> None:
    settings = make_settings(nats={"url": f"nats://127.0.0.1:{free_port()}"})
    base = gateway(settings)
    r = httpx.get(f"{base}/health", timeout=10)
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == "NATS unreachable"
    assert "cannot reach NATS" in body["detail"]
    assert body["gateway"]["status"] == "ok"


async def test_secrets_never_reach_logs_or_responses(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    gateway: Callable[[Settings], str],
    spawn: Callable[..., Proc],
    seaweed: SeaweedS3,
    probe_env: dict[str, str],
) -> None:
    nats_secret = "planted-nats-pass-8c1f"
    server = NatsServer(
        tmp_path / "authnats", extra=["--user", "lh", "--pass", nats_secret]
    ).start()
    try:
        settings = make_settings(
            backend="s3",
            seaweed=seaweed,
            nats={"url": server.url, "user": "lh", "password": nats_secret},
            log_level="DEBUG",
        )
        base = gateway(settings)
        spawn(settings, "worker", PROBE, env=probe_env)
        # A second gateway with the password in its URL and nothing listening there.
        bad = make_settings(nats={"url": f"nats://lh:{nats_secret}@127.0.0.1:{free_port()}"})
        bad_base = gateway(bad)
        async with httpx.AsyncClient(timeout=10) as c:

            async def probe_up() -> bool:
                r = await c.get(f"{base}/health")
                return r.status_code == 200 and bool(r.json()["workers"].get("probe"))

            await eventually(probe_up, timeout=30, what="probe worker in /health")
            bodies = [
                (await c.get(f"{base}/health")).text,
                (await c.get(f"{bad_base}/health")).text,
            ]
            bodies.append((await c.put(f"{base}/v1/storage/s/x", content=b"1")).text)
            bodies.append((await c.get(f"{base}/v1/storage/s/missing")).text)
            bodies.append((await c.get(f"{base}/v1/storage")).text)
        logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("proc-*.log"))
        assert "nats connect failed" in logs or "nats error" in logs  # the bad gateway did log
        for secret in (nats_secret, seaweed.secret_key):
            assert secret not in logs
            for body in bodies:
                assert secret not in body
    finally:
        server.stop()
