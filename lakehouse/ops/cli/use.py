"""Using the platform from a terminal: ``sql``, ``search``, ``datasets``, and the plumbing
that ``ingest`` and ``jobs`` (:mod:`lakehouse.ops.cli.ingest`) share with them.

They talk to a running gateway over HTTP only (``--url``, default ``$LAKEHOUSE_URL``, else
http://127.0.0.1:3110), through :class:`lakehouse.client.http.Client`: no NATS, no config
file, so they run anywhere the gateway is reachable. Results are rich tables on stdout
(``--json``: the gateway's JSON); progress bars go to stderr; an error is one line on stderr
and exit status 2 (an unreachable gateway, a 4xx with the gateway's ``error: detail``, a
failed job).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from lakehouse.client.render import when
from lakehouse.ops.cli.options import JsonOpt, UrlOpt, emit_json, fail, one_line

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from lakehouse.client.http import Client

T = TypeVar("T")

TABLE_ROWS = 1000
"""Rows ``sql`` shows as a table; more go to ``--format csv -o FILE``."""


class Format(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    PARQUET = "parquet"


# ---- plumbing ----------------------------------------------------------------------------
def _gateway(url: str | None, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``work`` with a client of the gateway at ``url``; its errors are one line, exit 2."""
    from lakehouse.client.http import Client, GatewayError

    async def go() -> T:
        async with Client(url) as gw:
            return await work(gw)

    try:
        return asyncio.run(go())
    except GatewayError as exc:
        fail(exc.line())
    except OSError as exc:
        fail(one_line(exc))


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def _note(message: str) -> None:
    """A remark on stderr that is not an error (truncated results, partial answers)."""
    typer.echo(f"note: {message}", err=True)


def _table(*headers: str | Text, numeric: tuple[bool, ...] = ()) -> Table:
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for i, header in enumerate(headers):
        right = i < len(numeric) and numeric[i]
        table.add_column(header, justify="right" if right else "left", overflow="fold")
    return table


def _cells(values: list[Any], width: int | None = None) -> list[Text]:
    from rich.text import Text

    from lakehouse.client.render import WIDTH, cell

    return [Text(cell(v, width or WIDTH)) for v in values]


# ---- sql ---------------------------------------------------------------------------------
def sql(
    query: Annotated[str, typer.Argument(help="One SELECT over the datasets (their names).")],
    fmt: Annotated[
        Format,
        typer.Option("--format", help="table (default), csv, json or parquet (needs -o)."),
    ] = Format.TABLE,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write csv, json or parquet to this file."),
    ] = None,
    url: UrlOpt = None,
) -> None:
    """Run one SELECT: a table, CSV, the gateway's JSON, or a Parquet file."""
    if fmt is Format.PARQUET and output is None:
        fail("--format parquet needs -o FILE")
    if fmt is Format.TABLE and output is not None:
        fail("-o needs --format csv, json or parquet")
    if fmt is Format.PARQUET:
        assert output is not None
        _sql_parquet(query, output, url)
        return
    result = _gateway(url, lambda gw: gw.sql(query))
    if result.get("truncated"):
        _note(f"the result was cut at {result.get('row_count')} rows (the gateway's row cap)")
    if fmt is Format.JSON:
        if output is None:
            emit_json(result)
        else:
            import json

            output.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return
    if fmt is Format.CSV:
        _write_csv(result, output)
        return
    _sql_table(result)


def _sql_table(result: Mapping[str, Any]) -> None:
    from rich.text import Text

    from lakehouse.client.render import is_numeric

    columns = result.get("columns") or []
    rows = result.get("rows") or []
    headers = [
        Text.assemble((str(c["name"]), "bold"), "\n", (str(c.get("type", "")), "dim"))
        for c in columns
    ]
    table = _table(*headers, numeric=tuple(is_numeric(str(c.get("type", ""))) for c in columns))
    for row in rows[:TABLE_ROWS]:
        table.add_row(*_cells(list(row)))
    _console().print(table)
    shown = min(len(rows), TABLE_ROWS)
    tail = f"{shown} row{'s' if shown != 1 else ''}"
    if len(rows) > TABLE_ROWS:
        tail += f" shown of {len(rows)} (all of them: --format csv -o FILE)"
    if result.get("truncated"):
        tail += "; truncated by the gateway's row cap"
    typer.echo(tail)


def _write_csv(result: Mapping[str, Any], output: Path | None) -> None:
    import csv

    from lakehouse.client.render import csv_value

    def write(fh: Any) -> None:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow([c["name"] for c in result.get("columns") or []])
        for row in result.get("rows") or []:
            out.writerow([csv_value(v) for v in row])

    if output is None:
        write(sys.stdout)
        return
    with output.open("w", newline="", encoding="utf-8") as fh:
        write(fh)


def _sql_parquet(query: str, output: Path, url: str | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = _gateway(url, lambda gw: gw.sql_arrow(query))
    table = pa.ipc.open_stream(pa.BufferReader(raw)).read_all()
    meta = table.schema.metadata or {}
    if meta.get(b"lakehouse.truncated") == b"true":
        _note(f"the result was cut at {table.num_rows} rows (the gateway's Arrow row cap)")
    try:
        pq.write_table(table.replace_schema_metadata(None), output)
    except OSError as exc:
        fail(one_line(exc))
    typer.echo(f"wrote {table.num_rows} rows to {output}", err=True)


# ---- search ------------------------------------------------------------------------------
def search(
    text: Annotated[str, typer.Argument(help="What to look for, in words.")],
    index: Annotated[str, typer.Option("--index", help="Vector index.", show_default=False)],
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter", help="SQL predicate over the index's dataset, e.g. \"state = 'IL'\"."
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Hits wanted.", min=1, max=1000)] = 10,
    fields: Annotated[
        str | None,
        typer.Option(help="Row fields to show, comma-separated (default: all but long text)."),
    ] = None,
    url: UrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Search an index by text (optionally filtered): the closest rows, best first."""
    wanted = [f.strip() for f in fields.split(",") if f.strip()] if fields else None

    async def work(gw: Client) -> tuple[dict[str, Any], dict[str, Any]]:
        answer = await gw.search(index, text=text, k=k, filter=filter_, fields=wanted)
        spec = next((i for i in await gw.indexes() if i.get("name") == index), {})
        return answer, spec

    answer, spec = _gateway(url, work)
    if json_out:
        emit_json(answer)
        return
    if answer.get("partial"):
        missing = ", ".join(str(p) for p in answer.get("missing_partitions") or [])
        _note(f"partitions {missing} did not answer in time: hits may be missing")
    hits = answer.get("hits") or []
    if not hits:
        typer.echo("no hits")
        return
    _console().print(_hits_table(hits, spec, wanted))
    matched = answer.get("filter_matches")
    tail = f"{len(hits)} hit{'s' if len(hits) != 1 else ''}"
    if matched is not None:
        tail += f" (the filter matched {matched} rows)"
    typer.echo(tail)


def _hits_table(
    hits: list[dict[str, Any]], spec: Mapping[str, Any], wanted: list[str] | None
) -> Table:
    from rich.text import Text

    from lakehouse.client.render import hit_row, score, score_label, snippet_window

    metric = spec.get("metric")
    rows = [hit_row(h) for h in hits]
    if wanted is not None:
        names = wanted
    else:  # every field, in the order they first appear; the id is its own column
        names = list(dict.fromkeys(name for row in rows for name in row))
        names = [n for n in names if n != spec.get("id_column")]
    snippets = any(isinstance(h.get("snippet"), Mapping) for h in hits)
    headers = ["#", score_label(metric), "id", *names, *(["match"] if snippets else [])]
    table = _table(*headers, numeric=(True, True))
    for rank, (hit, row) in enumerate(zip(hits, rows, strict=True), start=1):
        cells = _cells([rank, round(score(hit, metric), 4), hit.get("id")])
        cells += _cells([row.get(n) for n in names], width=40)
        if snippets:
            match = Text()
            snip = hit.get("snippet")
            if isinstance(snip, Mapping):
                line, marks = snippet_window(snip)
                if snip.get("column"):
                    match.append(f"{snip['column']}: ", style="dim")
                offset = len(match)
                match.append(line)
                for start, end in marks:
                    match.stylize("bold yellow", offset + start, offset + end)
            cells.append(match)
        table.add_row(*cells)
    return table


# ---- datasets ---------------------------------------------------------------------------
def datasets(
    name: Annotated[
        str | None, typer.Argument(help="One dataset: its columns and revision history.")
    ] = None,
    url: UrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every dataset (rows, revision, columns, last update), or one in detail."""
    if name is None:
        found = _gateway(url, lambda gw: gw.datasets())
        if json_out:
            emit_json(found)
            return
        if not found:
            typer.echo("no datasets")
            return
        table = _table(
            "name", "rows", "revision", "columns", "updated", numeric=(False,) + (True,) * 3
        )
        for m in found:
            table.add_row(
                *_cells([m.get("name"), m.get("row_count"), m.get("revision")]),
                *_cells([len(m.get("columns") or []), when(m.get("updated_at"))]),
            )
        _console().print(table)
        return

    async def work(gw: Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return await gw.dataset(name), await gw.history(name)

    manifest, events = _gateway(url, work)
    if json_out:
        emit_json({"manifest": manifest, "history": events})
        return
    console = _console()
    typer.echo(
        f"{manifest['name']}: {manifest.get('row_count')} rows, revision "
        f"{manifest.get('revision')}, {len(manifest.get('objects') or [])} object(s), "
        f"updated {when(manifest.get('updated_at'))}"
    )
    columns = _table("column", "type", "nullable")
    for c in manifest.get("columns") or []:
        columns.add_row(*_cells([c.get("name"), c.get("type"), c.get("nullable")]))
    console.print(columns)
    history = _table("revision", "event", "at", "rows", numeric=(True, False, False, True))
    for e in events:
        rows = (e.get("manifest") or {}).get("row_count")
        history.add_row(*_cells([e.get("revision"), e.get("type"), when(e.get("at")), rows]))
    console.print(history)


def register(app: typer.Typer) -> None:
    app.command()(sql)
    app.command()(search)
    app.command()(datasets)
