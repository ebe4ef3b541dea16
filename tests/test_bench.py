"""`lakehouse bench --quick` runs every workload and its floor; only correctness is asserted
(counts, recall — checked inside the workloads), never a timing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lakehouse.devtools.stack import project_env, run_cli

pytestmark = pytest.mark.slow


def test_bench_quick_produces_every_number(tmp_path: Path) -> None:
    """Every workload but concurrency and durability (each has a test file of its own, so the
    two pytest processes share them), compared with a baseline where ingest did better and
    search worse than anything real: --compare exits 1 naming ingest, and calls search better."""
    out, baseline = tmp_path / "bench.json", tmp_path / "baseline.json"
    ingest, search = "ingest: CSV → registered dataset (s)", "search p50 (ms)"
    baseline.write_text(
        json.dumps(
            {"rows": [
                {"workload": ingest, "unit": "s", "ratio": 0.01},
                {"workload": search, "unit": "ms", "ratio": 10_000.0},
            ]}
        )
    )  # fmt: skip
    only = "ingest,sql,upsert,vectors,filtered,texts,auto-embed"
    argv = ["bench", "--quick", "--only", only, "--out", str(out), "--compare", str(baseline)]
    proc = run_cli(*argv, env=project_env(), rc=1, timeout=600)  # without LAKEHOUSE_*
    assert proc.stderr.strip().endswith(f"by more than 25%: {ingest}"), proc.stderr[-2000:]
    compared = proc.stdout.split("compared with", 1)[1]
    verdicts = {
        ln.split("|")[1].strip(): ln.split("|")[5].strip()
        for ln in compared.splitlines()
        if ln.startswith("| ") and "×" in ln
    }
    assert verdicts[ingest] == "WORSE" and verdicts[search] == "better", compared
    assert verdicts["vector load (vectors/s)"] == "new", compared
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
        "embedding throughput, 2 embed workers (texts/s)",
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
    [embed] = [r for r in rows if r["workload"] == "auto-embed rate (texts/s)"]
    assert embed["floor"] > 0 and embed["ratio"] > 0  # the model alone on the same texts
    assert "| workload | ours | floor | ratio | seed | note |" in proc.stdout
