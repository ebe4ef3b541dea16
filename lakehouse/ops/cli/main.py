"""The ``lakehouse`` app: every command module registered on one typer app."""

import logging

import typer

from lakehouse.ops.cli import (
    certs,
    cluster,
    data,
    dev,
    dlq,
    ingest,
    keys,
    mcp,
    replay,
    stack,
    status,
    use,
)
from lakehouse.ops.cli.options import fail, one_line

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Lakehouse: use it over HTTP (ingest, sql, search, datasets, jobs), run the platform "
    "(up, gateway, worker, certs, keys), operate it (status, replay, verify, dlq, gc, compact, "
    "catalog) and develop it (bench, gen-workers, schemas).",
)
for module in (ingest, use, stack, status, replay, dlq, data, dev, cluster, mcp, certs, keys):
    module.register(app)


def main() -> None:
    """Console entry point: errors that escape a command still print one line, exit 2."""
    from lakehouse.platform.errors import LakehouseError

    # A command prints its result or one error line; the library's retry chatter stays out
    # (up, gateway and worker set up structured logging of their own).
    logging.getLogger().setLevel(logging.CRITICAL)
    try:
        app()
    except (LakehouseError, OSError, TimeoutError) as exc:
        try:
            fail(one_line(exc))
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
