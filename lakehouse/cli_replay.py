"""``lakehouse replay`` and ``lakehouse verify`` (registered on the main app in cli.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from lakehouse.cli import ConfigOpt, _settings


def replay(
    stream: Annotated[str, typer.Argument(help="Stream name, or short: catalog, vectors, ...")],
    from_seq: Annotated[int | None, typer.Option(help="First sequence (default: first).")] = None,
    from_time: Annotated[
        datetime | None, typer.Option(help="Start at the first message stored at/after this.")
    ] = None,
    to_seq: Annotated[int | None, typer.Option(help="Last sequence (default: last now).")] = None,
    subject: Annotated[str | None, typer.Option(help="Subject filter (wildcards ok).")] = None,
    into: Annotated[
        str,
        typer.Option(help="'live', or a directory for an isolated state (default: a temp one)."),
    ] = "isolated",
    threads: Annotated[int, typer.Option(help="hnswlib threads for rebuilt vectors.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Replay a stream range through the workers' own code, into a fresh isolated state or the
    live system; prints messages, per-subject counts, duration and rate."""
    import json
    import tempfile

    from lakehouse import replaycmd
    from lakehouse.bus import connect
    from lakehouse.errors import LakehouseError
    from lakehouse.replay import bounds, stream_of
    from lakehouse.storage import open_storage

    if from_seq is not None and from_time is not None:
        raise typer.BadParameter("give --from-seq or --from-time, not both")
    settings = _settings(config)
    name = stream_of(stream)

    async def go() -> dict[str, Any]:
        nc = await connect(settings, "lakehouse-replay", deadline=10)
        try:
            start, end = await bounds(
                nc, name, from_seq=from_seq, from_time=from_time, to_seq=to_seq
            )
            show = replaycmd.progress_printer(start, end)
            if into == "live":
                summary = await replaycmd.to_live(nc, name, start, end, subject, show)
                state: dict[str, Any] = {"into": "live"}
            else:
                out = (
                    Path(tempfile.mkdtemp(prefix="lakehouse-replay-"))
                    if into == "isolated"
                    else Path(into)
                )
                summary, state = await replaycmd.to_dir(
                    nc, open_storage(settings), name, start, end, subject, out, show, threads
                )
                state["into"] = str(out)
            return {**summary.as_dict(), "range": [start, end], "state": state}
        finally:
            await nc.close()

    try:
        result = asyncio.run(go())
    except LakehouseError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    typer.echo("", err=True)
    if json_out:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    typer.echo(
        f"replayed {result['messages']} message(s) of {name} (seq {result['range'][0]}.."
        f"{result['range'][1]}) in {result['seconds']:.2f} s ({result['rate'] or 0:.0f}/s) "
        f"into {result['state']['into']}"
    )
    for subj, n in result["subjects"].items():
        typer.echo(f"  {n:>8}  {subj}")
    for note in result["skipped"]:
        typer.echo(f"note: {note}")


def verify(
    expect: Annotated[
        Path | None, typer.Option(help="JSON of an independently computed expected state.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for live answers.")] = 30.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Compare the state rebuilt from the log with the live one; exit 1 on any difference."""
    import json

    from lakehouse.bus import connect
    from lakehouse.storage import open_storage
    from lakehouse.verify import verify as run_verify

    settings = _settings(config)
    wanted = json.loads(expect.read_text()) if expect else None

    async def go() -> Any:
        nc = await connect(settings, "lakehouse-verify", deadline=10)
        try:
            return await run_verify(nc, open_storage(settings), expect=wanted, timeout=timeout)
        finally:
            await nc.close()

    report = asyncio.run(go())
    if json_out:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for name, d in report.datasets.items():
            typer.echo(
                f"dataset {name}: revision {d['revision']}, {d['row_count']} rows, "
                f"checksum {d['checksum']}"
            )
        for name, d in report.indexes.items():
            typer.echo(f"index {name}: {d['count']} ids in {len(d['partitions'])} partitions")
        for line in report.diffs:
            typer.echo(f"DIFF {line}")
        typer.echo(
            "verify: ok" if not report.diffs else f"verify: {len(report.diffs)} difference(s)"
        )
    raise typer.Exit(1 if report.diffs else 0)
