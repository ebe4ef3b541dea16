"""Putting data in from a terminal: ``ingest`` (replace, append or upsert a CSV, following the
job until its rows are queryable, and searchable with auto-embed) and ``jobs``.

Like the other verbs for people (:mod:`lakehouse.ops.cli.use`, whose plumbing they share) they
talk to a running gateway over HTTP only: ``--url``, ``--json``, progress bars on stderr, an
error is one line on stderr and exit status 2 (a failed job included).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lakehouse.client.render import finished, when
from lakehouse.ops.cli.options import JsonOpt, UrlOpt, emit_json, fail, progress
from lakehouse.ops.cli.use import _cells, _console, _gateway, _table

if TYPE_CHECKING:
    from lakehouse.client.http import Client, GatewayError

POLL = 0.5
"""Seconds between two looks at a job being followed."""


class Mode(StrEnum):
    REPLACE = "replace"
    APPEND = "append"
    UPSERT = "upsert"


class Schema(StrEnum):
    STRICT = "strict"
    EVOLVE = "evolve"
    ANY = "any"


def _job_error(job: Mapping[str, Any]) -> GatewayError:
    from lakehouse.client.http import GatewayError

    err = job.get("error") or {}
    return GatewayError(
        int(err.get("status", 500)), str(err.get("error", "failed")), err.get("detail")
    )


def changes(result: Mapping[str, Any]) -> list[str]:
    """What an ingest did beyond its rows, as lines: rows inserted/updated/deleted (when the
    first line does not say it all: an upsert, or rows replaced), the schema change, and what
    auto-embed embedded, skipped and deleted."""
    lines = []
    if result.get("mode") == "upsert" or result.get("updated") or result.get("deleted"):
        lines.append(
            f"inserted {result.get('inserted', 0)}, updated {result.get('updated', 0)}, "
            f"deleted {result.get('deleted', 0)}"
        )
    if change := schema_change(result.get("schema_change")):
        lines.append(f"schema: {change}")
    if embed := result.get("embed"):
        lines.append(
            f"embedded {embed['texts_embedded']} texts, {embed['unchanged_skipped']} unchanged "
            f"skipped, {embed['deleted']} deleted from the index"
        )
    return lines


def schema_change(change: Mapping[str, Any] | None) -> str:
    """``added a, b; widened rate -> float64; dropped c`` (empty: no change)."""
    if not change:
        return ""
    parts = []
    if change.get("added"):
        parts.append(f"added {', '.join(change['added'])}")
    if change.get("widened"):
        widened = ", ".join(f"{c} -> {t}" for c, t in change["widened"].items())
        parts.append(f"widened {widened}")
    if change.get("dropped"):
        parts.append(f"dropped {', '.join(change['dropped'])}")
    return "; ".join(parts)


# ---- ingest ------------------------------------------------------------------------------
async def _follow(gw: Client, job_id: str, wait: float) -> tuple[dict[str, Any], bool]:
    """Poll the job until it failed, or succeeded and (with auto-embed) every embed batch is
    done; progress bars on stderr. The last view and whether it got there in ``wait`` s."""

    deadline = time.monotonic() + wait
    with progress("converting", None) as bar:
        while True:
            job = await gw.job(job_id)
            bar(int(job.get("progress_rows") or 0), f"rows, {job.get('state')}")
            if job.get("state") in ("succeeded", "failed"):
                break
            if time.monotonic() >= deadline:
                return job, False
            await asyncio.sleep(POLL)
    embed = job.get("embed")
    if job["state"] != "succeeded" or not embed:
        return job, True
    with progress(f"embedding into {embed['index']}", int(embed["batches"])) as bar:
        while True:
            bar(int(embed["batches_done"]), "batches")
            if finished(job):
                return job, True
            if time.monotonic() >= deadline:
                return job, False
            await asyncio.sleep(POLL)
            job = await gw.job(job_id)
            embed = job.get("embed") or embed


def ingest(
    file: Annotated[Path, typer.Argument(help="CSV file (header row, then one row a line).")],
    name: Annotated[str, typer.Option("--name", help="Dataset name.", show_default=False)],
    mode: Annotated[
        Mode,
        typer.Option(
            help="replace the dataset's rows, append to them, or upsert by --key (new keys "
            "added, existing keys' rows replaced)."
        ),
    ] = Mode.REPLACE,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Key column (--mode upsert): unique, non-empty in the file."),
    ] = None,
    delete_missing: Annotated[
        bool,
        typer.Option(
            "--delete-missing", help="With --mode upsert: delete the rows whose key is not in FILE."
        ),
    ] = False,
    schema: Annotated[
        Schema,
        typer.Option(
            help="strict: the dataset's columns; evolve: add columns, widen types; any: evolve, "
            "and drop the columns FILE lacks."
        ),
    ] = Schema.STRICT,
    embed_index: Annotated[
        str | None,
        typer.Option(help="Also embed every row into this vector index (created if missing)."),
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Column holding each row's id (with --embed-index).")
    ] = None,
    text_template: Annotated[
        str | None,
        typer.Option(help="Text embedded per row, e.g. '{role} in {city}' (with --embed-index)."),
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to follow the job before giving up on it.")
    ] = 3600.0,
    url: UrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload a CSV as dataset NAME (replace, append or upsert by key) and follow the job until
    its rows are queryable (and, with --embed-index, searchable)."""
    auto_embed = (embed_index, id_column, text_template)
    if any(v is not None for v in auto_embed) and not all(v is not None for v in auto_embed):
        fail("--embed-index, --id-column and --text-template go together")
    if mode is Mode.UPSERT and key is None:
        fail("--mode upsert needs --key COLUMN")
    if mode is not Mode.UPSERT and (key is not None or delete_missing):
        fail("--key and --delete-missing go with --mode upsert")
    if not file.is_file():
        fail(f"no such file: {file}")

    job_id = ""

    async def work(gw: Client) -> tuple[dict[str, Any], bool]:
        nonlocal job_id
        sent = 0
        with progress(f"uploading {file.name}", file.stat().st_size) as bar:

            def on_bytes(n: int) -> None:
                nonlocal sent
                sent += n
                bar(sent, "bytes")

            answer = await gw.ingest(
                file,
                name,
                mode=mode.value,
                key=key,
                delete_missing=delete_missing,
                schema=schema.value,
                wait=0,
                embed_index=embed_index,
                id_column=id_column,
                text_template=text_template,
                on_bytes=on_bytes,
            )
        job_id = str(answer["job_id"])
        return await _follow(gw, job_id, wait)

    try:
        job, finished = _gateway(url, work)
    except KeyboardInterrupt:
        if not job_id:
            raise
        typer.echo(f"interrupted; job {job_id} goes on: lakehouse jobs {job_id}", err=True)
        raise typer.Exit(130) from None
    if job.get("state") == "failed":
        fail(_job_error(job).line())
    if not finished:
        done = job.get("embed")
        where = (
            f"not searchable yet: {done['batches_done']}/{done['batches']} embed batches done"
            if job.get("state") == "succeeded" and done
            else f"still {job.get('state')}"
        )
        fail(f"job {job_id} is {where} after {wait:g} s (follow it: lakehouse jobs {job_id})")
    if json_out:
        emit_json(job)
        return
    result = job["result"]
    typer.echo(
        f"{result['name']}: {result['row_count']} rows ingested ({result['mode']}); "
        f"dataset has {result['dataset_rows']} rows at revision {result['revision']}"
    )
    for line in changes(result):
        typer.echo(line)
    if result.get("widened"):
        typer.echo(f"columns read as text: {', '.join(result['widened'])}")
    if embedded := job.get("embed"):
        typer.echo(
            f"searchable: {embedded['batches_done']}/{embedded['batches']} embed batches done "
            f"into index {embedded['index']}"
        )


# ---- jobs --------------------------------------------------------------------------------
def jobs(
    job_id: Annotated[
        str | None,
        typer.Argument(help="One job (ingest prints its id with --json); default: list them."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Jobs to list.", min=1, max=1000)] = 20,
    url: UrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recent jobs, newest first; or one job: its state, rows processed, result or error,
    auto-embed progress."""
    if job_id is None:
        listed = _gateway(url, lambda gw: gw.jobs(limit))
        if json_out:
            emit_json({"jobs": listed})
            return
        table = _table(
            "job", "state", "dataset", "rows", "updated", numeric=(False, False, False, True, False)
        )
        for j in listed:
            result = j.get("result") or {}
            table.add_row(
                *_cells(
                    [
                        j.get("job_id"),
                        j.get("state"),
                        result.get("name"),
                        j.get("progress_rows"),
                        when(j.get("updated_at")),
                    ]
                )
            )
        _console().print(table)
        return
    job = _gateway(url, lambda gw: gw.job(job_id))
    if json_out:
        emit_json(job)
        return
    typer.echo(f"job {job.get('job_id')} ({job.get('kind', 'ingest')}): {job.get('state')}")
    typer.echo(f"updated: {when(job.get('updated_at'))}")
    typer.echo(f"rows processed: {job.get('progress_rows', 0)}")
    if result := job.get("result"):
        typer.echo(
            f"result: dataset {result.get('name')}, {result.get('row_count')} rows "
            f"({result.get('mode')}), revision {result.get('revision')}, dataset has "
            f"{result.get('dataset_rows')} rows"
        )
        for line in changes(result):
            typer.echo(f"  {line}")
    if embed := job.get("embed"):
        typer.echo(
            f"embed: {embed.get('batches_done')}/{embed.get('batches')} batches into index "
            f"{embed.get('index')}"
        )
    if job.get("error"):
        typer.echo(f"failed: {_job_error(job).line()}")


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(jobs)
