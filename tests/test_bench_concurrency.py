"""`lakehouse bench --quick --only concurrency`: every row of the concurrency workload is
there and its answers were right (k hits, recall, SQL results equal DuckDB's: checked inside
the workload); timings never are asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lakehouse.devtools.bench.concurrency import QUICK
from lakehouse.devtools.stack import project_env, run_cli

pytestmark = pytest.mark.slow


def test_bench_concurrency_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--only", "concurrency", "--out", str(out)]
    run_cli(*argv, env=project_env(), rc=0, timeout=600)  # without LAKEHOUSE_*
    rows = {r["workload"]: r for r in json.loads(out.read_text())["rows"]}
    assert QUICK.clients == (1, 8)
    needed = [
        f"concurrency: {what}, {c} client{'' if c == 1 else 's'} {stat}"
        for what in ("vector search", "SQL")
        for c in QUICK.clients
        for stat in ("QPS", "p50 (ms)", "p99 (ms)")
    ]
    needed += [
        "concurrency: SQL, 8 clients, 2 query workers, QPS",
        "concurrency: vector search, 8 clients, 2 vectors workers, QPS",
        "concurrency: search recall@10, lowest of any point",
        "concurrency: vector worker RSS per vector (B)",
        "concurrency: vector search, 8 clients, p99 during a vector load (ms)",
    ]
    assert sorted(rows) == sorted([*needed, "concurrency: vector load while searched (vectors/s)"])
    load = rows["concurrency: vector load while searched (vectors/s)"]
    assert load["ours"] > 0 and load["floor"] is None, load
    assert f"of the {QUICK.load:,}×{QUICK.dim} vectors arrived" in rows[needed[-1]]["note"]
    for name in needed:
        r = rows[name]
        assert isinstance(r["ours"], float | int) and isinstance(r["floor"], float | int), r
        if "RSS" not in name:  # RSS growth over a 5K load is small and could even be negative
            assert r["ours"] > 0 and r["floor"] > 0, r
    recall = rows["concurrency: search recall@10, lowest of any point"]
    assert recall["ours"] >= 0.9 and recall["floor"] >= 0.9
    # The CPU of the stack's processes was measured during each of our points.
    for c in QUICK.clients:
        note = rows[f"concurrency: vector search, {c} client{'' if c == 1 else 's'} QPS"]["note"]
        assert "gateway" in note and "vectors" in note and "nats-server" in note, note
