"""The README's commands are the ones CI runs, and its examples work against a real gateway."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from lakehouse.platform.config import Settings
from lakehouse.platform.procs import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def blocks(tag: str) -> list[str]:
    return re.findall(rf"```{tag}\n(.*?)```", README, flags=re.S)


def run_block(block: str, base: str) -> subprocess.CompletedProcess[str]:
    """Run a README shell example against the gateway at ``base`` ($BASE), with this
    environment's ``lakehouse`` first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        env={**os.environ, "BASE": base, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_two_commands_and_ci_runs_the_same() -> None:
    first = blocks("sh")[0]
    assert [line.split("#")[0].strip() for line in first.strip().splitlines()] == [
        "make run",
        "make test",
    ]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^run: install\n\t\$\(BIN\)/lakehouse up$", makefile, flags=re.M)
    assert re.search(r"^test: lint browser\n\t\$\(BIN\)/pytest", makefile, flags=re.M)


def test_storage_examples_run(
    make_settings: Callable[..., Settings], gateway: Callable[[Settings], str]
) -> None:
    base = gateway(make_settings())
    [example] = [b for b in blocks("sh example") if "/v1/storage" in b]
    out = run_block(example, base)
    assert out.returncode == 0, out.stderr
    assert "1,Alice" in out.stdout
    assert '"docs/sample.csv"' in out.stdout


@pytest.mark.slow
def test_ingest_sql_and_nats_examples_run(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(("catalog", "ingest", "query", "embed", "vectors"))
    [example] = [b for b in blocks("sh example") if "/v1/ingest" in b]
    out = run_block(example, stack.base)
    assert out.returncode == 0, out.stderr
    assert '"row_count":2' in out.stdout.replace(" ", "")
    assert '[["Alice"],["Bob"]]' in out.stdout.replace(" ", "")

    [weekly] = blocks("sh example-weekly")
    out = run_block(weekly, stack.base)
    assert out.returncode == 0, out.stderr
    text = out.stdout.replace(" ", "")
    assert '"mode":"upsert","inserted":1,"updated":1,"deleted":1' in text, text
    assert '"added":["badge"],"widened":{"rate":"float64"}' in text
    assert '[[1,18.5,"B1"],[2,19.0,null],[4,21.0,"B4"]]' in text
    assert "[[1,18],[2,19],[3,20]]" in text  # revision 1, as it was

    def compacted() -> bool:  # 2 of 3 keys in a delete set: past compact_deleted_ratio
        events = httpx.get(f"{stack.base}/v1/catalog/roster/history").json()["events"]
        return [e["change"]["mode"] for e in events] == ["replace", "upsert", "compact"]

    wait_until(compacted, timeout=30, what="the catalog worker to compact the upserted dataset")

    [code] = blocks("python example-nats")
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    asyncio.run(scope["main"](stack.base, stack.nats.url))  # type: ignore[operator]

    def queryable() -> bool:
        r = httpx.post(f"{stack.base}/v1/sql", json={"sql": "SELECT name FROM upstream_people"})
        return r.status_code == 200 and r.json()["rows"] == [["Alice"]]

    wait_until(queryable, timeout=30, what="upstream dataset to be queryable")

    [vec_example] = blocks("sh example-vectors")
    out = run_block(vec_example, stack.base)
    assert out.returncode == 0, out.stderr

    def found() -> bool:
        r = httpx.post(
            f"{stack.base}/v1/vectors/indexes/people/search",
            json={"text": "electrician with industrial wiring", "k": 1},
        )
        return r.status_code == 200 and [h["id"] for h in r.json()["hits"]] == ["1"]

    wait_until(found, timeout=60, what="README vector example to find the electrician")

    # The verbs for people: ingest follows the job until searchable, then SQL and search.
    [cli] = blocks("sh example-cli")
    out = run_block(cli, stack.base)
    assert out.returncode == 0, out.stderr
    assert "Ann Lee,IL\nBo Diaz,IN" in out.stdout.replace("\r", "")
    assert "crew" in out.stdout.rsplit("forklift", 1)[-1]  # `datasets` lists it

    def cli_finds_ann() -> bool:
        search = 'lakehouse search "forklift driver" --index crew --k 1 --json --url "$BASE"'
        got = run_block(search, stack.base)
        return got.returncode == 0 and [h["id"] for h in json.loads(got.stdout)["hits"]] == ["1"]

    wait_until(cli_finds_ann, timeout=60, what="`lakehouse search` to find the forklift operator")
