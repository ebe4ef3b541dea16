"""The ``lakehouse`` command: ``up``, ``gateway``, ``worker``, ``provision``, ``schemas``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from lakehouse.config import Settings, load_settings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML config file (default ./lakehouse.toml).")
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    return load_settings(config, **{k: v for k, v in overrides.items() if v})


def _parse_replicas(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in values:
        kind, sep, n = item.partition("=")
        if not sep or not n.isdigit():
            raise typer.BadParameter(f"expected kind=N, got {item!r}", param_hint="--replicas")
        out[kind] = int(n)
    return out


@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="NATS store and file storage.")] = None,
    http_port: Annotated[int | None, typer.Option(help="Gateway port (3110).")] = None,
    nats_port: Annotated[int | None, typer.Option(help="Embedded NATS port (4222).")] = None,
    storage: Annotated[str | None, typer.Option(help="file://DIR or s3://BUCKET.")] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="Use this NATS instead of starting one.")
    ] = None,
    replicas: Annotated[
        list[str] | None, typer.Option(help="Processes per worker kind, e.g. query=2.")
    ] = None,
    workers: Annotated[
        str | None, typer.Option(help="Comma-separated worker kinds to run (default: all).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Start NATS, the gateway and one process of each worker kind; Ctrl-C stops all."""
    from lakehouse.logs import setup_logging
    from lakehouse.supervisor import run_supervisor
    from workers import KINDS, resolve

    base = _settings(config)
    kinds = [k.strip() for k in workers.split(",") if k.strip()] if workers else list(KINDS)
    for kind in kinds:
        try:
            resolve(kind)
        except (KeyError, ImportError, AttributeError, TypeError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--workers") from None
    reps = {**base.supervisor.replicas, **_parse_replicas(replicas or [])}
    unknown = sorted(set(reps) - set(kinds))
    if unknown:
        raise typer.BadParameter(
            f"unknown worker kind(s): {', '.join(unknown)}", param_hint="--replicas"
        )
    port = nats_port or base.supervisor.nats_port
    overrides: dict[str, Any] = {
        "data_dir": data_dir,
        "gateway": {"port": http_port} if http_port else None,
        "storage": {"url": storage} if storage else None,
        "supervisor": {"nats_port": port, "replicas": reps},
        "nats": {"url": nats_url or f"nats://127.0.0.1:{port}"},
    }
    settings = _settings(config, **overrides)
    setup_logging(settings.log_level, settings.secret_values())
    raise typer.Exit(run_supervisor(settings, kinds, start_nats=nats_url is None))


@app.command()
def gateway(
    host: Annotated[str | None, typer.Option(help="Bind address (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (3110).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the HTTP gateway."""
    import uvicorn

    from gateway.app import create_app
    from lakehouse.logs import setup_logging

    gw: dict[str, Any] = {k: v for k, v in {"host": host, "port": port}.items() if v}
    settings = _settings(config, gateway=gw or None)
    setup_logging(settings.log_level, settings.secret_values())
    uvicorn.run(
        create_app(settings),
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_config=None,
        timeout_graceful_shutdown=settings.gateway.shutdown_timeout,
    )


@app.command()
def worker(
    kind: Annotated[str, typer.Argument(help="Worker kind (or module:Class).")],
    burst: Annotated[bool, typer.Option(help="Drain the queue, then exit.")] = False,
    concurrency: Annotated[int | None, typer.Option(help="Messages handled at once.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run one worker process of KIND."""
    from lakehouse.runtime import run_worker
    from workers import resolve

    try:
        cls = resolve(kind)
    except (KeyError, ImportError, AttributeError, TypeError) as exc:
        raise typer.BadParameter(str(exc), param_hint="KIND") from None
    settings = _settings(config)
    if concurrency:
        settings.workers.concurrency[cls.kind] = concurrency
    raise typer.Exit(run_worker(settings, cls, burst=burst))


@app.command("provision")
def provision_cmd(config: ConfigOpt = None) -> None:
    """Create or update every JetStream stream (idempotent)."""
    from lakehouse.bus import connect, provision

    async def go() -> None:
        nc = await connect(_settings(config), "lakehouse-cli", deadline=10)
        report = await provision(nc.jetstream())
        await nc.close()
        for label, items in (("created", report.created), ("updated", report.updated)):
            for item in items:
                typer.echo(f"{label}: {item}")
        typer.echo(f"unchanged: {len(report.unchanged)}")

    asyncio.run(go())


@app.command()
def gc(
    grace: Annotated[
        float | None, typer.Option(help="Keep unreferenced objects younger than this (s).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be deleted.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Delete data objects that no dataset references (older than the grace period)."""
    from lakehouse.bus import connect
    from lakehouse.gc import sweep
    from lakehouse.storage import open_storage

    settings = _settings(config)

    async def go() -> None:
        nc = await connect(settings, "lakehouse-gc", deadline=10)
        storage = open_storage(settings)
        g = settings.catalog.gc_grace if grace is None else grace
        report = await sweep(nc.jetstream(), storage, g, dry_run=dry_run)
        await nc.close()
        for key in report.deleted:
            typer.echo(f"{'would delete' if dry_run else 'deleted'}: {key}")
        typer.echo(
            f"scanned {report.scanned}, referenced {report.referenced}, "
            f"kept (younger than grace) {report.kept_young}, deleted {len(report.deleted)}"
        )

    asyncio.run(go())


catalog_app = typer.Typer(help="Catalog maintenance.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("restore")
def catalog_restore(config: ConfigOpt = None) -> None:
    """Rebuild the catalog stream from the manifests mirrored under _catalog/ in storage."""
    from lakehouse import catalog
    from lakehouse.bus import connect, provision
    from lakehouse.storage import open_storage

    settings = _settings(config)

    async def go() -> None:
        nc = await connect(settings, "lakehouse-restore", deadline=10)
        await provision(nc.jetstream())
        names = await catalog.restore(nc.jetstream(), open_storage(settings))
        await nc.close()
        typer.echo(f"restored {len(names)} dataset(s): {', '.join(names) or '-'}")

    asyncio.run(go())


dlq_app = typer.Typer(help="Dead-lettered messages: inspect, retry after a fix, purge.")
app.add_typer(dlq_app, name="dlq")


def _with_js(config: Path | None, work: Any) -> Any:
    from lakehouse.bus import connect
    from lakehouse.storage import open_storage

    settings = _settings(config)

    async def go() -> Any:
        nc = await connect(settings, "lakehouse-dlq", deadline=10)
        try:
            return await work(nc.jetstream(), open_storage(settings))
        finally:
            await nc.close()

    return asyncio.run(go())


@dlq_app.command("list")
def dlq_list(kind: str, config: ConfigOpt = None) -> None:
    """One line per dead letter of KIND: sequence, subject, deliveries, error."""
    from lakehouse import dlq

    items = _with_js(config, lambda js, _: dlq.letters(js, kind))
    for item in items:
        le = item.letter
        typer.echo(
            f"{item.seq}\t{le.failed_at:%Y-%m-%d %H:%M:%S}\t{le.subject}\t"
            f"deliveries={le.deliveries}\t{le.error[:120]}"
        )
    typer.echo(f"{len(items)} dead letter(s) for {kind}")


@dlq_app.command("show")
def dlq_show(kind: str, seq: int, config: ConfigOpt = None) -> None:
    """A dead letter in full, with its payload."""
    from lakehouse import dlq

    async def work(js: Any, storage: Any) -> tuple[Any, bytes]:
        item = await dlq.get(js, kind, seq)
        return item, await dlq.payload(storage, item.letter)

    item, body = _with_js(config, work)
    typer.echo(item.letter.model_dump_json(indent=2, exclude={"payload_b64"}))
    typer.echo("payload:")
    typer.echo(body.decode("utf-8", errors="replace")[:4000])


@dlq_app.command("retry")
def dlq_retry(
    kind: str,
    seq: Annotated[int | None, typer.Argument(help="One dead letter; omit with --all.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every dead letter of KIND.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Re-publish dead-lettered messages to their original subjects (then drop the letters)."""
    from lakehouse import dlq

    if (seq is None) == (not all_):
        raise typer.BadParameter("give a SEQ or --all")

    async def work(js: Any, storage: Any) -> list[int]:
        items = await dlq.letters(js, kind) if all_ else [await dlq.get(js, kind, seq or 0)]
        return [await dlq.retry(js, storage, kind, item) for item in items]

    done = _with_js(config, work)
    typer.echo(f"re-published {len(done)} message(s)")


@dlq_app.command("purge")
def dlq_purge(kind: str, config: ConfigOpt = None) -> None:
    """Delete every dead letter of KIND."""
    from lakehouse import dlq

    n = _with_js(config, lambda js, _: dlq.purge(js, kind))
    typer.echo(f"purged {n} dead letter(s) for {kind}")


@app.command("gen-workers")
def gen_workers(
    rows: Annotated[int, typer.Option(help="Rows to generate.")] = 500_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 42,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output CSV path.")] = Path(
        "workers.csv"
    ),
) -> None:
    """Write a deterministic staffing CSV (18 columns, multi-line resumes)."""
    from lakehouse.gen import generate

    size = generate(out, rows, seed)
    typer.echo(f"wrote {rows} rows, {size / (1 << 20):.1f} MiB to {out}")


@app.command()
def bench(
    rows: Annotated[int, typer.Option(help="CSV rows to ingest.")] = 500_000,
    vectors: Annotated[int, typer.Option(help="Precomputed vectors to load.")] = 500_000,
    dim: Annotated[int, typer.Option(help="Vector dimension.")] = 768,
    texts: Annotated[int, typer.Option(help="Texts for the embedding workload.")] = 2_000,
    embed_rows: Annotated[int, typer.Option(help="Rows for auto-embed end to end.")] = 10_000,
    sql_runs: Annotated[int, typer.Option(help="Runs per SQL query after warm-up.")] = 30,
    quick: Annotated[
        bool, typer.Option(help="CI size: 20K rows, 20K×128 vectors, 200 texts.")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    only: Annotated[
        str | None,
        typer.Option(help="Comma-separated subset: ingest, sql, vectors, texts, auto-embed."),
    ] = None,
) -> None:
    """Run every workload next to its floor in the same run and print one table."""
    from lakehouse.bench.run import WORKLOADS, run

    chosen = {w.strip() for w in only.split(",") if w.strip()} if only else None
    unknown = (chosen or set()) - set(WORKLOADS)
    if unknown:
        raise typer.BadParameter(f"unknown workload(s) {sorted(unknown)}", param_hint="--only")
    if quick:
        rows, vectors, dim, texts, embed_rows = 20_000, 20_000, 128, 200, 200
    run(rows, vectors, dim, texts, embed_rows, sql_runs, json_out, chosen)


@app.command("schemas")
def schemas_cmd(out: Annotated[Path, typer.Argument()] = Path("schemas/json")) -> None:
    """Write the JSON Schema of every message to OUT."""
    from schemas.export import main as export

    raise typer.Exit(export([str(out)]))


from lakehouse import cli_replay  # noqa: E402 - its commands use ConfigOpt and _settings above

app.command()(cli_replay.replay)
app.command()(cli_replay.verify)


def main() -> None:
    app()
