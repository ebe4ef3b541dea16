"""Developer verbs: ``gen-workers``, ``bench``, ``schemas``."""

from pathlib import Path
from typing import Annotated

import typer

from lakehouse.ops.cli.options import JsonOpt, emit_json, fail, progress


def gen_workers(
    rows: Annotated[int, typer.Option(help="Rows to generate.")] = 500_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 42,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output CSV path.")] = Path(
        "workers.csv"
    ),
    json_out: JsonOpt = False,
) -> None:
    """Write a deterministic staffing CSV (18 columns, multi-line resumes)."""
    from lakehouse.devtools.datagen import generate

    try:
        with progress(f"write {out}", rows) as advance_to:
            size = generate(out, rows, seed, progress=advance_to)
    except OSError as exc:
        fail(f"{out}: {exc.strerror or exc}")
    if json_out:
        emit_json({"rows": rows, "bytes": size, "path": str(out)})
        return
    typer.echo(f"wrote {rows} rows, {size / (1 << 20):.1f} MiB to {out}")


def bench(
    rows: Annotated[int, typer.Option(help="CSV rows to ingest.")] = 500_000,
    vectors: Annotated[int, typer.Option(help="Precomputed vectors to load.")] = 500_000,
    dim: Annotated[int, typer.Option(help="Vector dimension.")] = 768,
    texts: Annotated[int, typer.Option(help="Texts for the embedding workload.")] = 2_000,
    embed_rows: Annotated[int, typer.Option(help="Rows for auto-embed end to end.")] = 10_000,
    sql_runs: Annotated[int, typer.Option(help="Runs per SQL query after warm-up.")] = 30,
    filtered_vectors: Annotated[
        int, typer.Option(help="Vectors for the filtered-search workload.")
    ] = 100_000,
    filtered_dim: Annotated[int, typer.Option(help="Their dimension.")] = 384,
    filtered_queries: Annotated[int, typer.Option(help="Queries per selectivity.")] = 200,
    concurrency_vectors: Annotated[
        int, typer.Option(help="384-d vectors for the concurrency workload.")
    ] = 200_000,
    quick: Annotated[
        bool,
        typer.Option(
            help="CI size: 5K rows, 5K×64 vectors (filtered: 5K×32, 20 queries), 50 texts, "
            "auto-embed of 50 rows, upsert of 1K rows; concurrency: 5K×384 vectors, 1 and 8 "
            "clients."
        ),
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the results here.")] = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated subset: ingest, sql, upsert, vectors, filtered, texts, "
            "auto-embed, concurrency, durability."
        ),
    ] = None,
    compare_to: Annotated[
        Path | None,
        typer.Option(
            "--compare",
            help="A earlier run's --out file: print each ratio's change and exit 1 when one "
            "worsened by more than --tolerance (e.g. docs/bench-baseline.json).",
        ),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="How much a ratio may worsen before --compare fails (0.25: 25%).")
    ] = 0.25,
    json_out: JsonOpt = False,
) -> None:
    """Run every workload next to its floor in the same run and print one table (with --json
    the table goes to stderr and the results to stdout)."""
    from dataclasses import replace

    from lakehouse.devtools.bench import compare, concurrency
    from lakehouse.devtools.bench.run import WORKLOADS, run

    chosen = {w.strip() for w in only.split(",") if w.strip()} if only else None
    unknown = (chosen or set()) - set(WORKLOADS)
    if unknown:
        fail(f"--only: unknown workload(s) {', '.join(sorted(unknown))}")
    baseline = None
    if compare_to is not None:
        try:
            baseline = compare.load(compare_to)
        except ValueError as exc:
            fail(f"--compare: {exc}")
    upsert_rows = None
    concurrency_size = replace(concurrency.FULL, vectors=concurrency_vectors)
    if quick:
        rows, vectors, dim, texts, embed_rows = 5_000, 5_000, 64, 50, 50
        filtered_vectors, filtered_dim, filtered_queries = 5_000, 32, 20
        upsert_rows = 1_000
        concurrency_size = concurrency.QUICK
    result = run(
        rows,
        vectors,
        dim,
        texts,
        embed_rows,
        sql_runs,
        out,
        chosen,
        filtered_size=(filtered_vectors, filtered_dim, filtered_queries),
        upsert_rows=upsert_rows,
        concurrency_size=concurrency_size,
        quiet=json_out,
    )
    if json_out:
        emit_json(result)
    if baseline is not None:
        table, worse = compare.report(compare.changes(baseline, result), tolerance)
        typer.echo(f"\ncompared with {compare_to}:\n{table}", err=json_out)
        if worse:
            names = ", ".join(c.workload for c in worse)
            typer.echo(f"worse than {compare_to} by more than {tolerance:.0%}: {names}", err=True)
            raise typer.Exit(1)


def schemas(
    out: Annotated[Path, typer.Argument(help="Directory to write into.")] = Path("schemas/json"),
    json_out: JsonOpt = False,
) -> None:
    """Write the contract to OUT: the JSON Schema of every message and the AsyncAPI document."""
    from schemas.export import write_all

    try:
        written = write_all(out)
    except OSError as exc:
        fail(f"{out}: {exc.strerror or exc}")
    if json_out:
        emit_json({"written": [str(p) for p in written]})
        return
    typer.echo(f"wrote {len(written)} file(s) to {out}")


def register(app: typer.Typer) -> None:
    app.command("gen-workers")(gen_workers)
    app.command()(bench)
    app.command()(schemas)
