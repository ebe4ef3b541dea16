"""``lakehouse dlq``: dead-lettered messages — inspect, retry after a fix, purge."""

from typing import Annotated, Any

import typer

from lakehouse.ops.cli.options import (
    Connection,
    JsonOpt,
    connected,
    emit_json,
    fail,
    nats_session,
    run,
)

dlq_app = typer.Typer(
    help="Dead-lettered messages: inspect, retry after a fix, purge.", no_args_is_help=True
)
KindArg = Annotated[str, typer.Argument(help="Worker kind: catalog, embed, ingest, ...")]


def _with_nats(conn: Connection, work: Any) -> Any:
    from lakehouse.platform.storage import open_storage

    settings = conn.settings()

    async def go() -> Any:
        async with nats_session(settings, "lakehouse-dlq") as nc:
            return await work(nc, open_storage(settings))

    return run(go)


@dlq_app.command("list")
@connected
def dlq_list(conn: Connection, kind: KindArg, json_out: JsonOpt = False) -> None:
    """One line per dead letter of KIND: sequence, subject, deliveries, error."""
    from lakehouse.ops import dlq

    items = _with_nats(conn, lambda nc, _: dlq.letters(nc, kind))
    if json_out:
        emit_json(
            [
                {"seq": i.seq, **i.letter.model_dump(mode="json", exclude={"payload_b64"})}
                for i in items
            ]
        )
        return
    for item in items:
        le = item.letter
        typer.echo(
            f"{item.seq}\t{le.failed_at:%Y-%m-%d %H:%M:%S}\t{le.subject}\t"
            f"deliveries={le.deliveries}\t{le.error[:120]}"
        )
    typer.echo(f"{len(items)} dead letter(s) for {kind}")


@dlq_app.command("show")
@connected
def dlq_show(
    conn: Connection,
    kind: KindArg,
    seq: Annotated[int, typer.Argument(help="Sequence number (from `dlq list`).")],
    json_out: JsonOpt = False,
) -> None:
    """A dead letter in full, with its payload."""
    from lakehouse.ops import dlq

    async def work(nc: Any, storage: Any) -> tuple[Any, bytes]:
        item = await dlq.get(nc, kind, seq)
        return item, await dlq.payload(storage, item.letter)

    item, body = _with_nats(conn, work)
    text = body.decode("utf-8", errors="replace")
    if json_out:
        letter = item.letter.model_dump(mode="json", exclude={"payload_b64"})
        emit_json({"seq": item.seq, **letter, "payload": text})
        return
    typer.echo(item.letter.model_dump_json(indent=2, exclude={"payload_b64"}))
    typer.echo("payload:")
    typer.echo(text[:4000])


@dlq_app.command("retry")
@connected
def dlq_retry(
    conn: Connection,
    kind: KindArg,
    seq: Annotated[int | None, typer.Argument(help="One dead letter; omit with --all.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every dead letter of KIND.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Re-publish dead-lettered messages to their original subjects (then drop the letters)."""
    from lakehouse.ops import dlq

    if (seq is None) == (not all_):
        fail("give a SEQ or --all")

    async def work(nc: Any, storage: Any) -> list[int]:
        items = await dlq.letters(nc, kind) if all_ else [await dlq.get(nc, kind, seq or 0)]
        return [await dlq.retry(nc, storage, kind, item) for item in items]

    done = _with_nats(conn, work)
    if json_out:
        emit_json({"republished": done})
        return
    typer.echo(f"re-published {len(done)} message(s)")


@dlq_app.command("purge")
@connected
def dlq_purge(conn: Connection, kind: KindArg, json_out: JsonOpt = False) -> None:
    """Delete every dead letter of KIND."""
    from lakehouse.ops import dlq

    n = _with_nats(conn, lambda nc, _: dlq.purge(nc, kind))
    if json_out:
        emit_json({"purged": n})
        return
    typer.echo(f"purged {n} dead letter(s) for {kind}")


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
