"""``lakehouse replay`` and ``lakehouse verify``: rebuild state from the log, compare it."""

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from lakehouse.ops.cli.options import (
    Connection,
    JsonOpt,
    connected,
    emit_json,
    fail,
    nats_session,
    progress,
    run,
)


@connected
def replay(
    conn: Connection,
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
    json_out: JsonOpt = False,
) -> None:
    """Replay a stream range through the workers' own code, into a fresh isolated state or the
    live system; prints messages, per-subject counts, duration and rate."""
    from lakehouse.ops.replay import Summary, to_dir, to_live
    from lakehouse.platform.storage import open_storage
    from lakehouse.platform.streams import bounds, stream_of

    if from_seq is not None and from_time is not None:
        fail("give --from-seq or --from-time, not both")
    settings = conn.settings()
    name = stream_of(stream)

    async def go() -> dict[str, Any]:
        async with nats_session(settings, "lakehouse-replay") as nc:
            start, end = await bounds(
                nc, name, from_seq=from_seq, from_time=from_time, to_seq=to_seq
            )
            with progress(f"replay {name}", max(0, end - start + 1)) as advance_to:

                def show(summary: Summary, end_seq: int) -> None:
                    advance_to(summary.last_seq - start + 1, f"{summary.messages} messages")

                if into == "live":
                    summary = await to_live(nc, name, start, end, subject, show)
                    state: dict[str, Any] = {"into": "live"}
                else:
                    out = (
                        Path(tempfile.mkdtemp(prefix="lakehouse-replay-"))
                        if into == "isolated"
                        else Path(into)
                    )
                    summary, state = await to_dir(
                        nc, open_storage(settings), name, start, end, subject, out, show, threads
                    )
                    state["into"] = str(out)
            return {**summary.as_dict(), "range": [start, end], "state": state}

    result = run(go)
    if json_out:
        emit_json(result)
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


@connected
def verify(
    conn: Connection,
    expect: Annotated[
        Path | None, typer.Option(help="JSON of an independently computed expected state.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for live answers.")] = 30.0,
    json_out: JsonOpt = False,
) -> None:
    """Compare the state rebuilt from the log with the live one; exit 1 on any difference.
    Each dataset's last catalog.keep_revisions revisions are checked (time travel)."""
    from lakehouse.ops.verify import verify as run_verify
    from lakehouse.platform.storage import open_storage

    settings = conn.settings()
    try:
        wanted = json.loads(expect.read_text()) if expect else None
    except (OSError, ValueError) as exc:
        fail(f"--expect {expect}: {exc}")

    async def go() -> Any:
        async with nats_session(settings, "lakehouse-verify") as nc:
            return await run_verify(
                nc,
                open_storage(settings),
                expect=wanted,
                timeout=timeout,
                keep_revisions=settings.catalog.keep_revisions,
            )

    report = run(go)
    if json_out:
        emit_json(report.as_dict())
    else:
        for name, d in report.datasets.items():
            typer.echo(
                f"dataset {name}: revision {d['revision']}, {d['row_count']} rows, "
                f"checksum {d['checksum']}"
            )
            for rev, r in d["revisions"].items():
                if rev != d["revision"]:
                    typer.echo(f"  revision {rev}: {r['row_count']} rows, checksum {r['checksum']}")
            if d["collected"]:
                typer.echo(f"  collected by gc: revision(s) {d['collected']}")
        for name, d in report.indexes.items():
            typer.echo(f"index {name}: {d['count']} ids in {len(d['partitions'])} partitions")
        for line in report.diffs:
            typer.echo(f"DIFF {line}")
        typer.echo(
            "verify: ok" if not report.diffs else f"verify: {len(report.diffs)} difference(s)"
        )
    raise typer.Exit(1 if report.diffs else 0)


def register(app: typer.Typer) -> None:
    app.command()(replay)
    app.command()(verify)
