"""The embedding workloads: texts through the items API (one embed worker, and
``lakehouse up --replicas embed=2`` on its own stack) and auto-embed of an ingest, each next to
the model called directly in the same run."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx
import pyarrow.csv as pacsv

from lakehouse.devtools.bench.workloads import Lean, Row, new_index, timed, timed_post, wait_count
from lakehouse.devtools.datagen import iter_rows
from lakehouse.devtools.stack import Stack


def texts(stack: Stack, count: int) -> list[Row]:
    from lakehouse.platform.config import load_settings
    from lakehouse.vectors.embedding import load_provider

    items = [f"{r[2]} in {r[3]}, {r[4]}. Skills: {r[8]}." for r in iter_rows(count, seed=9)]
    provider = load_provider(load_settings("/nonexistent.toml"))
    provider.embed(items[:8])
    direct_s = timed(lambda: [provider.embed(items[i : i + 64]) for i in range(0, count, 64)])

    def pipeline(c: httpx.Client, index: str) -> float:
        """Seconds from the first upload until every text is searchable in ``index``."""
        new_index(c, {"name": index, "dim": 384, "partitions": 2})
        t = time.perf_counter()
        for s in range(0, count, 500):
            batch = [{"id": str(i), "text": items[i]} for i in range(s, min(s + 500, count))]
            r = c.post(f"/v1/vectors/indexes/{index}/items", json={"items": batch})
            r.raise_for_status()
        wait_count(c, index, count, timeout=36_000)
        return time.perf_counter() - t

    # `lakehouse up --replicas embed=2` (each worker on half the cores), a stack of its own.
    root = stack.root.with_name(f"{stack.root.name}-embed2")
    pair = Stack(root, overrides=stack.overrides, tuned=stack.tuned)
    try:
        # Only what the items API needs: the gateway, embed and vector workers.
        pair.up({"embed": 2}, kinds=("embed", "vectors"))
        with httpx.Client(base_url=pair.base, timeout=120) as c:
            two_s = pipeline(c, "bench_text")
    finally:
        pair.stop()
    with httpx.Client(base_url=stack.base, timeout=120) as c:
        pipe_s = pipeline(c, "bench_text")
        cold, cached = [], []
        lean = Lean(stack.base)
        path = "/v1/vectors/indexes/bench_text/search"
        for i in range(20):
            q = {"text": f"forklift driver OSHA-30 near St. Louis {i}"}
            cold.append(timed_post(lean, path, q)[0])
        for _ in range(40):
            ms, got = timed_post(lean, path, {"text": "electrician with industrial wiring"})
            cached.append(ms)
        lean.close()
        assert got["hits"], got
    return [
        Row(
            "embedding throughput (texts/s)",
            count / pipe_s,
            count / direct_s,
            "texts/s",
            "234 texts/s (GPU, serialized add)",
            "floor: the model called directly",
        ),
        Row(
            "embedding throughput, 2 embed workers (texts/s)",
            count / two_s,
            count / pipe_s,
            "texts/s",
            note="lakehouse up --replicas embed=2 (each worker on half the cores); floor: 1 "
            "embed worker on all cores, measured just after",
        ),
        Row("text → top-K p50, cold (ms)", statistics.median(cold), None, "ms", "~50 ms"),
        Row("text → top-K p50, cached (ms)", statistics.median(cached), None, "ms", "~50 ms"),
    ]


MODEL_SAMPLE = 1000  # texts the auto-embed floor embeds directly


def auto_embed(stack: Stack, csv: Path, rows: int) -> list[Row]:
    """Ingest with auto-embed until every row is searchable; the floor is the model called
    directly (batches of 64, the worker's settings) on the first ``MODEL_SAMPLE`` of the same
    rendered texts, so the ratio is the share of the model's own speed the pipeline keeps."""
    from lakehouse.platform.config import load_settings
    from lakehouse.vectors.embedding import load_provider

    template = (
        "{role} in {city}, {state}. Skills: {skills}. "
        "Certifications: {certifications}. {resume_text}"
    )
    params: dict[str, str | int] = {
        "name": "auto",
        "embed_index": "auto",
        "id_column": "worker_id",
        "text_template": template,
        "wait": 3600,
    }
    table = pacsv.read_csv(csv, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    rendered = [template.format(**row) for row in table.slice(0, MODEL_SAMPLE).to_pylist()]
    sample = sorted(rendered, key=len)  # batched by length, as the embed worker does
    provider = load_provider(load_settings("/nonexistent.toml"))
    provider.embed(sample[:8])
    direct_s = timed(
        lambda: [provider.embed(sample[i : i + 64]) for i in range(0, len(sample), 64)]
    )
    model_rate = len(sample) / direct_s
    with httpx.Client(base_url=stack.base, timeout=3600) as c:
        t = time.perf_counter()
        r = c.post("/v1/ingest", params=params, content=csv.read_bytes())
        r.raise_for_status()
        registered = time.perf_counter() - t
        wait_count(c, "auto", rows, timeout=36_000)
        total = time.perf_counter() - t
    rate = rows / total
    return [
        Row(
            f"auto-embed {rows} rows end to end (s)",
            total,
            None,
            "s",
            "35 min for 500K (RTX A4000)",
            f"ingest+register {registered:.1f} s; the rest is the model",
        ),
        Row(
            "auto-embed rate (texts/s)",
            rate,
            model_rate,
            "texts/s",
            "",
            f"floor: the model directly on {len(sample)} of the same texts",
        ),
        Row("auto-embed 500K extrapolated (min)", 500_000 / rate / 60, None, "min", "35 min"),
    ]
