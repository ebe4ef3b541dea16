"""Stored data upkeep: ``gc``, ``compact`` and ``catalog restore``."""

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
    """Delete data objects that no dataset references (older than the grace period); the
    objects of each dataset's last catalog.keep_revisions revisions are kept (time travel)."""
    from lakehouse.platform.storage import open_storage
    from lakehouse.tables.gc import sweep

    settings = conn.settings()

    async def go() -> Any:
        async with nats_session(settings) as nc:
            g = settings.catalog.gc_grace if grace is None else grace
            keep = settings.catalog.keep_revisions
            return await sweep(nc, open_storage(settings), g, keep_revisions=keep, dry_run=dry_run)

    report = run(go)
    counts = {
        "scanned": report.scanned,
        "referenced": report.referenced,
        "kept_young": report.kept_young,
    }
    if json_out:
        emit_json(
            {
                **counts,
                "dry_run": dry_run,
                "deleted": report.deleted,
                "dropped_revisions": report.dropped_revisions,
            }
        )
        return
    for key in report.deleted:
        typer.echo(f"{'would delete' if dry_run else 'deleted'}: {key}")
    for name, revisions in report.dropped_revisions.items():
        verb = "would no longer be" if dry_run else "no longer"
        typer.echo(f"{name}: revisions {revisions} {verb} readable (time travel)")
    typer.echo(
        f"scanned {report.scanned}, referenced {report.referenced}, "
        f"kept (younger than grace) {report.kept_young}, deleted {len(report.deleted)}"
    )


COMPACT_TIMEOUTS = 30
"""Compaction rewrites every row of the dataset: it may take this many
``nats.request_timeout`` (as ``POST /v1/catalog/{name}/compact``)."""


@connected
def compact(
    conn: Connection,
    name: Annotated[str, typer.Argument(help="Dataset to compact.", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Rewrite dataset NAME's rows into fresh objects without its delete sets (the rows do not
    change; a new revision records it). Nothing happens when it is one object already."""
    from lakehouse.platform.rpc import call
    from schemas import subjects as S
    from schemas.catalog import CompactRequest, Manifest, NameRequest, RegisterReply

    settings = conn.settings()

    async def go() -> tuple[Manifest, RegisterReply]:
        async with nats_session(settings) as nc:
            timeout = settings.nats.request_timeout
            ask = NameRequest(name=name)
            before = await call(nc, S.CATALOG_GET, ask, timeout=timeout, what="catalog")
            raw = await call(
                nc,
                S.CATALOG_COMPACT,
                CompactRequest(name=name),
                timeout=timeout * COMPACT_TIMEOUTS,
                what="catalog",
            )
            return Manifest.model_validate_json(before), RegisterReply.model_validate_json(raw)

    before, reply = run(go)
    after = reply.manifest
    if json_out:
        emit_json(reply.model_dump(mode="json"))
        return
    if after.revision == before.revision:
        typer.echo(f"{after.name}: nothing to compact (revision {after.revision})")
        return
    deletes = len(before.deletes)
    typer.echo(
        f"compacted {after.name}: revision {before.revision} -> {after.revision}, "
        f"{plural(len(before.objects), 'object')} + {plural(deletes, 'delete set')} -> "
        f"{plural(len(after.objects), 'object')}, {after.row_count} rows"
    )


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
            await provision(nc.jetstream(), replicas=settings.nats.replicas)
            return await catalog.restore(nc.jetstream(), open_storage(settings))

    names = run(go)
    if json_out:
        emit_json({"restored": names})
        return
    typer.echo(f"restored {len(names)} dataset(s): {', '.join(names) or '-'}")


def register(app: typer.Typer) -> None:
    app.command()(gc)
    app.command()(compact)
    app.add_typer(catalog_app, name="catalog")
