"""`lakehouse bench --quick` runs every workload and its floor; only correctness is asserted
(counts, recall — checked inside the workloads), never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.platform.procs import REPO_ROOT

pytestmark = pytest.mark.slow


def test_bench_quick_produces_every_number(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "lakehouse", "bench", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    names = {r["workload"] for r in rows}
    for needed in (
        "ingest: CSV → registered dataset (s)",
        "SQL count(*) p50 (ms)",
        "vector load (vectors/s)",
        "search p50 (ms)",
        "recall@10 vs brute force",
        "filtered 2% search p50 (ms)",
        "filtered 0.1% recall@10",
        "embedding throughput (texts/s)",
        "text → top-K p50, cached (ms)",
        "auto-embed 50 rows end to end (s)",
        "upsert next week's export, diff + register (s)",
        "upsert: texts re-embedded",
    ):
        assert needed in names, needed
    for r in rows:
        assert isinstance(r["ours"], float | int) and r["ours"] >= 0, r
    [rec] = [r for r in rows if r["workload"] == "recall@10 vs brute force"]
    assert rec["ours"] >= 0.9
    filtered = [
        r for r in rows if r["workload"].startswith("filtered") and "recall" in r["workload"]
    ]
    assert len(filtered) == 3 and all(r["ours"] >= 0.95 for r in filtered)
    assert "| workload | ours | floor | ratio | seed | note |" in proc.stdout
