"""``lakehouse certs``: a development CA and the certificates of a secured stack."""

from pathlib import Path
from typing import Annotated

import typer

from lakehouse.ops.cli.options import Connection, JsonOpt, connected, emit_json, fail, one_line


@connected
def certs(
    conn: Connection,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Directory for them (default DATA_DIR/secrets).", show_default=False
        ),
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="Another name of the server, an IP address or DNS name (repeatable); "
            "127.0.0.1 and localhost are always in.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Make a CA (ca.pem), a server certificate (server.pem: NATS clients and routes, the
    gateway's HTTPS, S3) and a client certificate (client.pem: NATS mutual TLS), each with
    its -key.pem, where missing; existing files are kept. Point tls.ca_file, tls.cert_file
    and tls.key_file at them, and LAKEHOUSE_CA at ca.pem for the verbs."""
    from lakehouse.ops.certs import ensure, hosts_of

    target = out if out is not None else conn.settings().secrets_dir
    hosts = [h.strip() for h in host or [] if h.strip()]
    try:
        made = ensure(target, hosts)
        named = set(hosts_of(made.server))
    except (OSError, ValueError) as exc:
        fail(one_line(exc))
    missing = [h for h in hosts if h not in named]
    if missing:
        typer.echo(
            f"note: the existing {made.server.name} does not name {', '.join(missing)}; "
            f"delete it and {made.server_key.name} to make it again",
            err=True,
        )
    if json_out:
        emit_json(
            {
                "dir": str(made.dir),
                "created": [str(p) for p in made.created],
                "existing": [str(p) for p in made.all() if p not in made.created],
                "server_names": sorted(named),
                "server_lacks": missing,
            }
        )
        return
    for path in made.all():
        typer.echo(f"{'created' if path in made.created else 'exists '}  {path}")


def register(app: typer.Typer) -> None:
    app.command()(certs)
