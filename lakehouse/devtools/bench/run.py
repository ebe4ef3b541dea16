"""Run the workloads and print one table: workload, ours, floor, ratio, the seed's figure."""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from lakehouse.devtools.bench import embedding
from lakehouse.devtools.bench import workloads as W
from lakehouse.devtools.bench.concurrency import FULL as CONCURRENCY_FULL
from lakehouse.devtools.bench.concurrency import Size, concurrency
from lakehouse.devtools.bench.durability import durability
from lakehouse.devtools.bench.filtered import filtered
from lakehouse.devtools.bench.upsert import upsert
from lakehouse.devtools.datagen import generate
from lakehouse.devtools.stack import Stack

WORKLOADS = (
    "ingest",
    "sql",
    "upsert",
    "vectors",
    "filtered",
    "texts",
    "auto-embed",
    "concurrency",
    "durability",
)


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def table(rows: list[W.Row]) -> str:
    lines = ["| workload | ours | floor | ratio | seed | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}×"
        lines.append(
            f"| {r.workload} | {fmt(r.ours)} | {fmt(r.floor)} | {ratio} | {r.seed} | {r.note} |"
        )
    return "\n".join(lines)


def run(
    rows: int,
    vectors: int,
    dim: int,
    texts: int,
    embed_rows: int,
    sql_runs: int,
    json_out: Path | None,
    only: set[str] | None = None,
    *,
    filtered_size: tuple[int, int, int] = (100_000, 384, 200),
    upsert_rows: int | None = None,
    concurrency_size: Size = CONCURRENCY_FULL,
    quiet: bool = False,
) -> dict[str, Any]:
    """``only``: a subset of WORKLOADS to run (default: all); ``filtered_size``: vectors,
    dimension and queries per selectivity of the filtered workload; ``upsert_rows``: rows of
    the upsert workload's dataset (default ``rows``); ``concurrency_size``: the concurrency
    workload's vectors, rows, seconds per point and client counts. The table goes to stdout (to
    stderr when ``quiet``); returns the header and rows, also written to ``json_out``."""
    started = time.monotonic()
    stream = sys.stderr if quiet else sys.stdout

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    def want(name: str) -> bool:
        return only is None or name in only

    out: list[W.Row] = []
    with tempfile.TemporaryDirectory(prefix="lakehouse-bench-") as tmp:
        work = Path(tmp)
        csv = work / "workers.csv"
        tabular = want("ingest") or want("sql")  # SQL runs on the ingested dataset
        if tabular:
            size = generate(csv, rows, seed=42)
            say(f"generated {rows:,} rows ({size / W.MiB:.0f} MiB)")
        # The shipped settings, but no periodic snapshot during a measurement, and room for
        # the concurrency workload's 32 clients (all on one key: the anonymous one).
        snapshots = {
            "vectors": {"snapshot_every": 3600},
            "limits": {"max_concurrent_queries": 64},
        }
        stack = Stack(work / "stack", overrides=snapshots, tuned=False)
        if only is None or only - {"durability"}:  # durability starts servers of its own
            stack.up()
        try:
            if want("concurrency"):  # first: it adds and removes workers, best on an empty stack
                out += concurrency(stack, concurrency_size, work)
                say(table(out))
            if tabular:
                rows_ingest, parquet = W.ingest(stack, csv, rows, work)
                out += rows_ingest if want("ingest") else []
                if want("sql"):
                    out += W.sql(stack, parquet, rows, sql_runs)
                say(table(out))
            if want("upsert"):
                out += upsert(stack, upsert_rows or rows, work)
                say(table(out[-3:]))
            if want("vectors"):
                out += W.vectors(stack, vectors, dim)
                say(table(out[-4:]))
            if want("filtered"):
                out += filtered(stack, *filtered_size)
                say(table(out[-10:]))
            if want("texts"):
                out += embedding.texts(stack, texts)
            if want("auto-embed"):
                sub = work / "subset.csv"
                generate(sub, embed_rows, seed=7)
                out += embedding.auto_embed(stack, sub, embed_rows)
            if want("durability"):
                out += durability(work, rows, vectors, dim)
                say(table(out[-8:]))
        finally:
            stack.stop()
    report = table(out)
    header = (
        f"{datetime.now(UTC):%Y-%m-%d} · {platform.machine()} · {psutil.cpu_count()} cores · "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB · rows {rows:,} · "
        f"vectors {vectors:,}×{dim} · "
        + (f"filtered {filtered_size[0]:,}×{filtered_size[1]} · " if want("filtered") else "")
        + (
            f"concurrency {concurrency_size.vectors:,}×{concurrency_size.dim}, "
            f"{concurrency_size.rows:,} rows, {concurrency_size.seconds:g} s a point · "
            if want("concurrency")
            else ""
        )
        + f"texts {texts:,} · auto-embed {embed_rows:,} · "
        f"{time.monotonic() - started:.0f} s"
        + (f" · only {','.join(sorted(only))}" if only else "")
    )
    say(f"\n{header}\n\n{report}")
    result = {"header": header, "rows": [{**asdict(r), "ratio": r.ratio} for r in out]}
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
    return result
