"""Ingest and SQL through the gateway, next to DuckDB doing the same work in-process.

    .venv/bin/python bench/pipeline.py [--rows 100000] [--backend file|s3] [--runs 30]

Starts a real stack (nats-server, gateway, catalog/ingest/query workers) on free ports,
generates the staffing CSV, then reports: ingest wall time until the 200 vs DuckDB
``COPY (FROM read_csv) TO parquet`` on the same file; and ``SELECT count(*)`` p50/p95
through POST /v1/sql vs the same SQL on the same Parquet in-process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lakehouse.gen import generate
from tests.support.stack import Stack


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p * (len(values) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--backend", choices=["file", "s3"], default="file")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = root / "workers.csv"
        t = time.perf_counter()
        size = generate(csv, args.rows, 42)
        print(
            f"generated {args.rows} rows, {size / 2**20:.1f} MiB in {time.perf_counter() - t:.1f}s"
        )
        seaweed = None
        if args.backend == "s3":
            from tests.support.servers import SeaweedS3

            seaweed = SeaweedS3(root / "s3").start()
        stack = Stack(root / "stack", backend=args.backend, seaweed=seaweed).start()
        try:
            with httpx.Client(base_url=stack.base, timeout=600) as c:
                ingest = []
                for i in range(3):
                    with csv.open("rb") as fh:
                        t = time.perf_counter()
                        r = c.post(f"/v1/ingest?name=bench{i}", content=fh)
                        ingest.append(time.perf_counter() - t)
                    r.raise_for_status()
                result = r.json()
                floor = []
                for _ in range(3):
                    con = duckdb.connect()
                    t = time.perf_counter()
                    con.execute(
                        f"COPY (SELECT * FROM read_csv('{csv}')) TO '{root}/floor.parquet'"
                        " (FORMAT parquet)"
                    )
                    floor.append(time.perf_counter() - t)
                    con.close()
                query = "SELECT count(*) FROM bench0"
                for _ in range(5):
                    c.post("/v1/sql", json={"sql": query}).raise_for_status()
                ours = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    r = c.post("/v1/sql", json={"sql": query})
                    ours.append((time.perf_counter() - t) * 1000)
                    r.raise_for_status()
                assert r.json()["rows"] == [[args.rows]], r.text
            manifest_key = result["key"]
            parquet = stack.settings.data_dir / "objects" / manifest_key
            local = parquet if parquet.exists() else None
            con = duckdb.connect()
            if local is None:
                import boto3  # noqa: F401  (s3: read the floor from the local copy instead)

                local = root / "floor.parquet"
            con.execute(f"CREATE VIEW bench0 AS SELECT * FROM read_parquet('{local}')")
            for _ in range(5):
                con.execute(query).fetchall()
            inproc = []
            for _ in range(args.runs):
                t = time.perf_counter()
                con.execute(query).fetchall()
                inproc.append((time.perf_counter() - t) * 1000)
        finally:
            stack.stop()
            if seaweed:
                seaweed.stop()
    best_ingest, best_floor = min(ingest), min(floor)
    print(f"backend={args.backend} rows={args.rows} parquet={result['key']}")
    print("| workload | ours | floor | ratio |")
    print("|---|---|---|---|")
    print(
        f"| ingest (POST /v1/ingest until 200, best of 3) | {best_ingest:.2f} s "
        f"| {best_floor:.2f} s (DuckDB COPY) | {best_ingest / best_floor:.2f}x |"
    )
    print(
        f"| SELECT count(*) p50 / p95 ({args.runs} runs) | {statistics.median(ours):.2f} / "
        f"{pct(ours, 0.95):.2f} ms | {statistics.median(inproc):.2f} / {pct(inproc, 0.95):.2f} ms "
        f"(in-process DuckDB) | +{statistics.median(ours) - statistics.median(inproc):.2f} ms |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
