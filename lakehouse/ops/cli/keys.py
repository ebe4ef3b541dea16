"""``lakehouse keys``: the gateway's API keys — create (printed once), list, revoke.

The key file is ``auth.keys_file`` (default ``<data-dir>/secrets/keys.json``); a running
gateway reads it again within a second of a change, so a new or revoked key takes effect
without a restart (rotation: create the new key, hand it out, revoke the old).
"""

from typing import Annotated

import typer

from lakehouse.ops.cli.options import Connection, JsonOpt, connected, emit_json, fail

keys_app = typer.Typer(
    help="Gateway API keys: create (printed once), list, revoke.", no_args_is_help=True
)


@keys_app.command("create")
@connected
def create(
    conn: Connection,
    role: Annotated[str, typer.Option(help="reader, writer or admin.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(help="Dataset/index names the key reaches (glob, repeatable): workers*."),
    ] = None,
    label: Annotated[str, typer.Option(help="Who or what the key is for.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Make a new key and print it (once: only its hash is stored)."""
    from lakehouse.platform.auth import KeyStore, Role

    try:
        wanted = Role(role)
    except ValueError:
        fail(f"--role must be reader, writer or admin, not {role!r}")
    store = KeyStore(conn.settings().keys_file)
    key, record = store.create(wanted, tuple(scope or ()), label)
    if json_out:
        emit_json({"key": key, **record.public()})
        return
    typer.echo(key)
    scopes = f", scopes {', '.join(record.scopes)}" if record.scopes else ""
    typer.echo(
        f"(key {record.id}, role {record.role.value}{scopes}; stored as a hash in "
        f"{store.path}: this is the only time it is shown)",
        err=True,
    )


@keys_app.command("list")
@connected
def list_keys(conn: Connection, json_out: JsonOpt = False) -> None:
    """Every key: id, role, scopes, label, created (never the key)."""
    from lakehouse.platform.auth import KeyStore

    keys = KeyStore(conn.settings().keys_file).keys()
    if json_out:
        emit_json([k.public() for k in keys])
        return
    for k in keys:
        scopes = ",".join(k.scopes) or "*"
        typer.echo(f"{k.id}  {k.role.value:<6}  {scopes:<16}  {k.created}  {k.label}")


@keys_app.command("revoke")
@connected
def revoke(conn: Connection, key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Remove a key: requests with it (and its web sessions) are refused from then on."""
    from lakehouse.platform.auth import KeyStore

    store = KeyStore(conn.settings().keys_file)
    if store.revoke(key_id) is None:
        fail(f"no key {key_id!r} in {store.path}")
    typer.echo(f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
