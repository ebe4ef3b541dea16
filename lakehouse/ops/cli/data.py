"""Stored data upkeep: ``gc`` and ``catalog restore``."""

from typing import Annotated, Any

import typer

from lakehouse.ops.cli.options import Connection, JsonOpt, connected, emit_json, nats_session, run


@connected
def gc(
    conn: Connection,
    grace: Annotated[
        float | None, typer.Option(help="Keep unreferenced objects younger than this (s).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be deleted.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Delete data objects that no dataset references (older than the grace period)."""
    from lakehouse.platform.storage import open_storage
    from lakehouse.tables.gc import sweep

    settings = conn.settings()

    async def go() -> Any:
        async with nats_session(settings) as nc:
            g = settings.catalog.gc_grace if grace is None else grace
            return await sweep(nc.jetstream(), open_storage(settings), g, dry_run=dry_run)

    report = run(go)
    counts = {
        "scanned": report.scanned,
        "referenced": report.referenced,
        "kept_young": report.kept_young,
    }
    if json_out:
        emit_json({**counts, "dry_run": dry_run, "deleted": report.deleted})
        return
    for key in report.deleted:
        typer.echo(f"{'would delete' if dry_run else 'deleted'}: {key}")
    typer.echo(
        f"scanned {report.scanned}, referenced {report.referenced}, "
        f"kept (younger than grace) {report.kept_young}, deleted {len(report.deleted)}"
    )


catalog_app = typer.Typer(help="Catalog maintenance.", no_args_is_help=True)


@catalog_app.command("restore")
@connected
def catalog_restore(conn: Connection, json_out: JsonOpt = False) -> None:
    """Rebuild the catalog stream from the manifests mirrored under _catalog/ in storage."""
    from lakehouse.platform.bus import provision
    from lakehouse.platform.storage import open_storage
    from lakehouse.tables import catalog

    settings = conn.settings()

    async def go() -> list[str]:
        async with nats_session(settings) as nc:
            await provision(nc.jetstream())
            return await catalog.restore(nc.jetstream(), open_storage(settings))

    names = run(go)
    if json_out:
        emit_json({"restored": names})
        return
    typer.echo(f"restored {len(names)} dataset(s): {', '.join(names) or '-'}")


def register(app: typer.Typer) -> None:
    app.command()(gc)
    app.add_typer(catalog_app, name="catalog")
