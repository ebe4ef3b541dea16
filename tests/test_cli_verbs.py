"""The verbs for people (ingest, sql, search, datasets, jobs) against a real gateway over
HTTP, run as ``lakehouse`` subprocesses with ``--url``; one stack for the module (``compact``
too, which talks to NATS)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import typing
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from lakehouse.client import http, render
from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack, project_env
from lakehouse.ops.cli import options, use
from lakehouse.platform.procs import REPO_ROOT, free_port

ALL = ("catalog", "ingest", "query", "embed", "vectors")
ENV = project_env(COLUMNS="200")  # no LAKEHOUSE_URL from the developer's shell

PEOPLE = """id,name,role,city
1,Ana,electrician with industrial wiring,Peoria
2,Bo,welder,Austin
3,Cy,forklift operator,Peoria
4,Di,registered nurse,Boston
5,Ed,electrician apprentice,Austin
6,Flo,bookkeeper,Peoria
"""
MANUAL_COMPACT = {"catalog": {"compact_deleted_ratio": 1.0}}  # `lakehouse compact` does it


PEORIA = "city = 'Peoria'"


def lakehouse(url: str | None, *argvs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """``lakehouse <argv> --url URL`` for every argv, all at once; their results in order."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lakehouse", *argv, *(["--url", url] if url else [])],
            env=ENV,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    done = []
    for argv, proc in zip(argvs, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return done


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, (out.args, out.stdout, out.stderr)
    return out.stdout


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit status 2 and exactly one line on stderr: that line."""
    assert out.returncode == 2, (out.args, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, (out.args, out.stderr)
    assert out.stdout == ""
    return lines[0]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a rich table as printed (cells split on the column bar)."""
    return [[c.strip() for c in line.split("│")] for line in text.splitlines() if "│" in line]


@pytest.mark.slow
@pytest.mark.stack(kinds=ALL, shared=True, overrides=MANUAL_COMPACT)
def test_ingest_with_auto_embed_follows_the_job_then_search_prints_rows(
    stack: Stack, tmp_path: Path
) -> None:
    csv_path = tmp_path / "people.csv"
    csv_path.write_text(PEOPLE)
    argv = ["ingest", str(csv_path), "--name", "people", "--embed-index", "people"]
    argv += ["--id-column", "id", "--text-template", "{role} in {city}", "--json"]
    [out] = lakehouse(stack.base, argv)
    job = json.loads(ok(out))
    assert job["state"] == "succeeded" and job["progress_rows"] == 6
    assert job["result"]["name"] == "people" and job["result"]["dataset_rows"] == 6
    assert job["embed"]["index"] == "people"
    assert job["embed"]["batches_done"] == job["embed"]["batches"] >= 1
    with stack.client() as c:  # the vectors workers apply what the embed batches published
        wait_until(
            lambda: c.get("/v1/vectors/indexes/people").json()["count"] == 6,
            timeout=20,
            interval=0.1,
            what="the embedded rows to be applied",
        )
    plain, picked, as_json, shown, listing = lakehouse(
        stack.base,
        ["search", "electrician", "--index", "people", "--k", "3"],
        ["search", "electrician", "--index", "people", "--filter", PEORIA, "--fields", "name,city"],
        ["search", "nurse", "--index", "people", "--k", "2", "--json"],
        ["jobs", job["job_id"]],
        ["jobs", "--json"],
    )
    listed = json.loads(ok(listing))["jobs"]
    assert job["job_id"] in [j["job_id"] for j in listed]  # newest first, this one included
    assert [j["updated_at"] for j in listed] == sorted(
        (j["updated_at"] for j in listed), reverse=True
    )
    text = ok(plain)
    header = text.splitlines()[0]
    for column in ("#", "score", "id", "name", "role", "city"):
        assert column in header, header
    rows = table_rows(text)
    assert len(rows) == 3 and "3 hits" in text
    assert rows[0][0] == "1" and "electrician" in rows[0][4]  # rank, score, id, name, role
    assert 0 < float(rows[0][1]) <= 1 and float(rows[0][1]) >= float(rows[1][1])
    text = ok(picked)
    header = text.splitlines()[0]
    assert "name" in header and "city" in header and "role" not in header
    rows = table_rows(text)
    assert rows and all(r[-1] == "Peoria" for r in rows), text
    assert {r[3] for r in rows} <= {"Ana", "Cy", "Flo"}
    assert "the filter matched 3 rows" in text
    answer = json.loads(ok(as_json))
    assert answer["hits"][0]["id"] == "4" and len(answer["hits"]) == 2
    text = ok(shown)
    assert f"job {job['job_id']} (ingest): succeeded" in text
    assert "rows processed: 6" in text and "result: dataset people, 6 rows" in text
    assert f"embed: {job['embed']['batches']}/{job['embed']['batches']} batches" in text


@pytest.mark.slow
@pytest.mark.stack(kinds=ALL, shared=True, overrides=MANUAL_COMPACT)
def test_sql_as_table_csv_json_and_parquet(stack: Stack, tmp_path: Path) -> None:
    src = tmp_path / "scores.csv"
    src.write_text('id,name,score,note\n1,Ana,2.5,plain\n2,Bo,-1.25,"a, ""quoted"" note"\n')
    text = ok(lakehouse(stack.base, ["ingest", str(src), "--name", "scores"])[0])
    assert text.strip() == "scores: 2 rows ingested (replace); dataset has 2 rows at revision 1"
    query = "SELECT id, name, score, note FROM scores ORDER BY id"
    out_csv, out_parquet = tmp_path / "out.csv", tmp_path / "out.parquet"
    table, to_stdout, to_file, as_json, parquet = lakehouse(
        stack.base,
        ["sql", query],
        ["sql", query, "--format", "csv"],
        ["sql", query, "--format", "csv", "-o", str(out_csv)],
        ["sql", query, "--format", "json"],
        ["sql", query, "--format", "parquet", "-o", str(out_parquet)],
    )
    text = ok(table)
    lines = text.splitlines()
    assert all(name in lines[0] for name in ("id", "name", "score", "note"))
    assert all(t in lines[1] for t in ("BIGINT", "VARCHAR", "DOUBLE"))
    assert table_rows(text)[-2:] == [
        ["1", "Ana", "2.5", "plain"],
        ["2", "Bo", "-1.25", 'a, "quoted" note'],
    ]
    assert lines[-1] == "2 rows"
    expected = [
        ["id", "name", "score", "note"],
        ["1", "Ana", "2.5", "plain"],
        ["2", "Bo", "-1.25", 'a, "quoted" note'],
    ]
    assert list(csv.reader(io.StringIO(ok(to_stdout)))) == expected
    assert ok(to_file) == "" and list(csv.reader(out_csv.open())) == expected
    result = json.loads(ok(as_json))
    assert result["rows"] == [[1, "Ana", 2.5, "plain"], [2, "Bo", -1.25, 'a, "quoted" note']]
    assert result["truncated"] is False
    assert ok(parquet) == "" and "wrote 2 rows" in parquet.stderr
    back = pq.read_table(out_parquet)
    assert back.column_names == ["id", "name", "score", "note"]
    assert [list(r.values()) for r in back.to_pylist()] == result["rows"]


@pytest.mark.slow
@pytest.mark.stack(kinds=ALL, shared=True, overrides=MANUAL_COMPACT)
def test_datasets_lists_and_describes_with_history(stack: Stack) -> None:
    with stack.client() as c:
        for mode, row in (("replace", b"Peoria,110\n"), ("append", b"Austin,960\n")):
            r = c.post(f"/v1/ingest?name=cities&mode={mode}", content=b"city,pop\n" + row)
            assert r.status_code == 200, r.text
    listed, described, as_json = lakehouse(
        stack.base, ["datasets"], ["datasets", "cities"], ["datasets", "cities", "--json"]
    )
    text = ok(listed)
    assert all(c in text.splitlines()[0] for c in ("name", "rows", "revision", "columns"))
    row = next(r for r in table_rows(text) if r[0] == "cities")
    assert row[1:4] == ["2", "2", "2"] and row[4].startswith("20")
    text = ok(described)
    assert text.startswith("cities: 2 rows, revision 2, 2 object(s)")
    rows = table_rows(text)
    assert ["city", "string", "false"] in rows and ["pop", "int64", "false"] in rows
    revisions = [r for r in rows if r[1] == "registered"]
    assert [(r[0], r[3]) for r in revisions] == [("1", "1"), ("2", "2")]
    body = json.loads(ok(as_json))
    assert body["manifest"]["revision"] == 2 and len(body["history"]) == 2


@pytest.mark.slow
@pytest.mark.stack(kinds=ALL, shared=True, overrides=MANUAL_COMPACT)
def test_upsert_by_key_prints_its_counts_then_compact_rewrites_it(
    stack: Stack, tmp_path: Path
) -> None:
    rows = [f"{i},worker {i},{'Peoria' if i % 2 else 'Austin'}" for i in range(1, 21)]
    first, changed = tmp_path / "roster.csv", tmp_path / "roster2.csv"
    first.write_text("id,name,city\n" + "\n".join(rows) + "\n")
    # Row 1 changes (with a new column), 2-19 stay as they are, 20 is gone, 21 is new.
    kept = [f"{r}," for r in rows[1:19]]
    changed.write_text(
        "\n".join(["id,name,city,level", "1,worker 1,Boston,lead", *kept, "21,x,Gary,"])
    )
    ok(lakehouse(stack.base, ["ingest", str(first), "--name", "roster"])[0])
    argv = ["ingest", str(changed), "--name", "roster", "--mode", "upsert", "--key", "id"]
    [upsert] = lakehouse(stack.base, [*argv, "--delete-missing", "--schema", "evolve"])
    assert ok(upsert).splitlines() == [
        "roster: 2 rows ingested (upsert); dataset has 20 rows at revision 2",
        "inserted 1, updated 1, deleted 1",
        "schema: added level",
    ]
    assert stack.cli("compact", "roster").strip() == (
        "compacted roster: revision 2 -> 3, 2 objects + 1 delete set -> 1 object, 20 rows"
    )
    with stack.client() as c:
        again, missing = c.post("/v1/catalog/roster/compact"), c.post("/v1/catalog/no/compact")
        page = c.get("/datasets/roster").text
    assert again.status_code == 200, again.text
    after = again.json()["manifest"]  # nothing left to compact: the same revision
    assert (after["revision"], len(after["objects"]), after["deletes"]) == (3, 1, [])
    assert missing.status_code == 404 and missing.json()["error"] == "not found"
    assert "+1 ~1 −1" in page and "added level" in page  # the revisions' changes


@pytest.mark.slow
@pytest.mark.stack(kinds=ALL, shared=True, overrides=MANUAL_COMPACT)
def test_a_failed_job_and_a_4xx_are_one_line_exit_2(stack: Stack, tmp_path: Path) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4\n5\n")
    bad, missing = lakehouse(
        stack.base, ["ingest", str(ragged), "--name", "ragged"], ["jobs", "nosuchjob"]
    )
    line = one_line_error(bad)
    assert line.startswith("error: invalid CSV: ") and "row 3" in line, line
    assert one_line_error(missing) == "error: not found: no job 'nosuchjob'"


def test_an_unreachable_gateway_is_one_line_exit_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    src = tmp_path / "x.csv"
    src.write_text("a\n1\n")
    outs = lakehouse(
        url,
        ["sql", "SELECT 1"],
        ["datasets"],
        ["ingest", str(src), "--name", "x"],
        ["search", "x", "--index", "x"],
    )
    for out in outs:
        assert one_line_error(out) == f"error: cannot reach the gateway at {url}: ConnectError"


def test_usage_errors_are_one_line_without_a_gateway(tmp_path: Path) -> None:
    outs = lakehouse(
        None,
        ["sql", "SELECT 1", "--format", "parquet"],
        ["ingest", str(tmp_path / "none.csv"), "--name", "x"],
        ["ingest", str(tmp_path), "--name", "x", "--embed-index", "x"],
        ["ingest", str(tmp_path), "--name", "x", "--mode", "upsert"],
    )
    messages = [one_line_error(o) for o in outs]
    assert messages == [
        "error: --format parquet needs -o FILE",
        f"error: no such file: {tmp_path / 'none.csv'}",
        "error: --embed-index, --id-column and --text-template go together",
        "error: --mode upsert needs --key COLUMN",
    ]


def test_the_url_option_names_the_clients_default() -> None:
    option = typing.get_args(options.UrlOpt)[1]
    assert http.DEFAULT_URL in option.help and http.URL_ENV in option.help


def render_hits(hits: list[dict[str, typing.Any]], spec: dict[str, typing.Any]) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(use._hits_table(hits, spec, None))
    return console.export_text()


def test_hits_show_rows_and_snippets_or_fall_back_to_metadata() -> None:
    spec = {"name": "people", "metric": "cosine", "id_column": "id"}
    long = "x" * 100 + " certified electrician " + "y" * 100
    start = long.index("electrician")
    with_rows = [
        {
            "id": "1",
            "distance": 0.25,
            "row": {"id": 1, "name": "Ana", "notes": long},
            "snippet": {"column": "notes", "text": long, "marks": [[start, start + 11]]},
        },
        {
            "id": "2",
            "distance": 0.5,
            "row": {"id": 2, "name": "Bo", "notes": None},
            "snippet": None,
        },
    ]
    text = render_hits(with_rows, spec)
    header = ["#", "┃", "score", "┃", "id", "┃", "name", "┃", "notes", "┃", "match"]
    assert text.splitlines()[0].split() == header
    rows = table_rows(text)
    assert rows[0][:4] == ["1", "0.75", "1", "Ana"] and rows[1][:4] == ["2", "0.5", "2", "Bo"]
    assert rows[0][4] == render.cell(long, 40) and rows[0][4].endswith("…")
    assert rows[0][5].startswith("notes: …") and "electrician" in rows[0][5]
    assert rows[1][5] == ""
    old = [{"id": "a", "distance": 1.5, "metadata": {"tag": "t"}}, {"id": "b", "distance": 2.0}]
    text = render_hits(old, {"metric": "l2"})
    assert text.splitlines()[0].split() == ["#", "┃", "distance", "┃", "id", "┃", "tag"]
    assert table_rows(text) == [["1", "1.5", "a", "t"], ["2", "2", "b", ""]]


def test_snippet_window_keeps_the_first_mark_in_view() -> None:
    text = "a" * 50 + "\nNEEDLE\t" + "b" * 50
    at = text.index("NEEDLE")
    line, marks = render.snippet_window({"text": text, "marks": [[at, at + 6], [999, 1000]]}, 30)
    assert len(line) == 30 and line.startswith("…") and line.endswith("…")
    assert "\n" not in line and [line[s:e] for s, e in marks] == ["NEEDLE"]
    assert render.snippet_window({"text": "short", "marks": [[0, 2]]}) == ("short", [(0, 2)])
    assert render.cell(None) == "" and render.cell(1 / 3) == "0.333333"
    assert render.cell({"a": [1, 2]}) == '{"a":[1,2]}' and render.cell(True) == "true"
    assert render.cell("a\n  b" + "c" * 100, 10) == "a bcccccc…"
    assert render.is_numeric("DECIMAL(18,3)") and not render.is_numeric("INTEGER[]")
