"""``supervisor.nats_sync`` reaches the nats-server ``lakehouse up`` starts (checked on the
server's own /varz, limits kept), and ``lakehouse bench --quick --only durability`` produces
every row of its CI size (the publishes on bare R1 and R3 servers); only correctness is
asserted, never a timing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import project_env, run_cli
from lakehouse.platform.config import SupervisorSettings
from lakehouse.platform.procs import (
    free_port,
    nats_config_path,
    nats_server_argv,
    with_nats_sync,
)


def jetstream_config(tmp_path: Path, sync: str) -> dict[str, Any]:
    """Start nats-server as ``lakehouse up`` would with ``sync``; its JetStream config."""
    monitor = free_port()
    argv = nats_server_argv(free_port(), tmp_path / sync / "nats", sync=sync)
    proc = subprocess.Popen([*argv, "-m", str(monitor)], stderr=subprocess.DEVNULL)
    try:

        def varz() -> dict[str, Any] | None:
            assert proc.poll() is None, f"nats-server exited ({proc.returncode})"
            try:
                body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{monitor}/varz").json()
            except httpx.HTTPError:
                return None
            return body

        found = wait_until(varz, what="nats-server monitoring")
        assert found is not None
        config: dict[str, Any] = found["jetstream"]["config"]
        return config
    finally:
        proc.terminate()
        proc.wait(10)


def test_nats_sync_reaches_the_server_and_keeps_the_limits(tmp_path: Path) -> None:
    default = jetstream_config(tmp_path, "default")
    assert not default.get("sync_always") and default["sync_interval"] == 120 * 10**9
    always = jetstream_config(tmp_path, "always")
    assert always["sync_always"] is True
    ten = jetstream_config(tmp_path, "10s")
    assert not ten.get("sync_always") and ten["sync_interval"] == 10 * 10**9
    for js in (default, always, ten):  # the repo's nats-server.conf limits, not the defaults
        assert js["max_memory"] == 256 << 20 and js["max_storage"] == 20 << 30, js
    # Applied twice (a config that has it already): one sync_interval, the last asked for.
    text = with_nats_sync(with_nats_sync(nats_config_path().read_text(), "always"), "10s")
    assert text.count("sync_interval") == 1 and 'sync_interval: "10s"' in text
    assert with_nats_sync("listen: 1\n", "always").endswith(
        "jetstream {\n  sync_interval: always\n}\n"
    )


def test_nats_sync_setting_refuses_what_nats_server_would_not_take() -> None:
    assert SupervisorSettings().nats_sync == "always"  # README "Durability": the chosen default
    for ok in ("default", "always", "10s", "500ms", "2m"):
        assert SupervisorSettings(nats_sync=ok).nats_sync == ok
    for bad in ("sometimes", "10", "always "):
        with pytest.raises(ValidationError):
            SupervisorSettings(nats_sync=bad)
        with pytest.raises(ValueError):
            with_nats_sync("", bad)


@pytest.mark.slow
def test_bench_quick_durability_produces_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--only", "durability", "--out", str(out)]
    run_cli(*argv, env=project_env(), rc=0, timeout=600)  # without LAKEHOUSE_*
    rows = json.loads(out.read_text())["rows"]
    names = [r["workload"] for r in rows]
    for mode in ("R1", "R3"):
        for what in (
            "JetStream publish 1 KB, 16 in flight (msg/s)",
            "JetStream publish 1 KB, one at a time (msg/s)",
        ):  # CI size: the publishes only, on bare servers (ingest and vectors by hand)
            assert f"{mode} sync always: {what}" in names, (mode, what, names)
    assert len(rows) == 4
    for r in rows:  # ours: sync always; floor: the default; both measured
        assert r["ours"] > 0 and r["floor"] > 0 and r["ratio"] > 0, r
