"""Developer verb ``cluster``: the clustered stack on one machine (see
:mod:`lakehouse.devtools.cluster`), the same code the chaos tests run."""

from pathlib import Path
from typing import Annotated

import typer

from lakehouse.ops.cli.options import fail


def cluster(
    nodes: Annotated[int, typer.Option(help="NATS nodes (streams get min(nodes, 3) copies).")] = 3,
    hosts: Annotated[
        int, typer.Option(help="Copies of the gateway and every worker kind, one per host.")
    ] = 2,
    storage: Annotated[
        str,
        typer.Option(
            help="s3: SeaweedFS as master, 3 volume servers, filer and S3; file: one "
            "directory, declared shared."
        ),
    ] = "s3",
    netns: Annotated[
        bool,
        typer.Option(
            "--netns",
            help="Each NATS node with its host's processes in its own network namespace "
            "(root): a partition is a cut link.",
        ),
    ] = False,
    workers: Annotated[
        str | None, typer.Option(help="Comma-separated worker kinds to run (default: all).")
    ] = None,
    http_port: Annotated[
        int | None, typer.Option("--http-port", help="First gateway's port (the next follow).")
    ] = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where every node and host keeps its files.")
    ] = Path("data/cluster"),
) -> None:
    """Start a JetStream cluster, SeaweedFS servers and HOSTS copies of the gateway and
    every worker kind on this machine; Ctrl-C stops all. For trying fail-over by hand: the
    quick start's `lakehouse up` is the single-node way."""
    import signal
    import threading

    from lakehouse.devtools.cluster import Cluster
    from lakehouse.devtools.netns import unavailable
    from lakehouse.ops.cli.stack import _kinds

    if nodes < 1 or hosts < 1:
        fail("--nodes and --hosts must be at least 1")
    if storage not in ("s3", "file"):
        fail(f"--storage must be s3 or file, not {storage!r}")
    if netns and (problem := unavailable()):
        fail(f"--netns: {problem}")
    kinds = tuple(_kinds(workers))
    c = Cluster(data_dir.resolve(), nodes, hosts, kinds, storage, netns=netns, http_port=http_port)
    typer.echo(f"starting {nodes} NATS nodes, {storage} storage and {hosts} hosts...", err=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        c.start()
    except (RuntimeError, AssertionError, OSError) as exc:
        fail(f"cluster did not start: {str(exc).splitlines()[0]}")
    try:
        typer.echo(c.banner())
        stop.wait()
        typer.echo("\nstopping: hosts, then SeaweedFS, then NATS...", err=True)
    finally:
        c.stop()


def register(app: typer.Typer) -> None:
    app.command()(cluster)
