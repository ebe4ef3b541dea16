"""One CLI style: shared connection options, one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.devtools.stack import project_env, run_cli
from lakehouse.platform.procs import REPO_ROOT, free_port

# Every command that talks to a running stack (a verb path, then its required arguments).
CONNECTED = [
    ["verify"],
    ["replay", "catalog"],
    ["provision"],
    ["gc", "--dry-run"],
    ["catalog", "restore"],
    ["dlq", "list", "ingest"],
    ["dlq", "purge", "ingest"],
]


def lakehouse(*argv: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*argv, env=project_env(COLUMNS="200"), rc=None)


@pytest.mark.slow  # each command waits out its 5 s connect deadline
def test_commands_pointed_at_nothing_print_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lakehouse",
                *argv,
                "--nats-url",
                url,
                "--data-dir",
                str(tmp_path),
            ],
            env=project_env(),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in CONNECTED
    ]
    for argv, proc in zip(CONNECTED, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (argv, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert lines[0].startswith(f"error: cannot connect to NATS at {url}"), (argv, err)
        assert out == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["worker", "nope"], "error: unknown worker kind 'nope'"),
        (["bench", "--only", "nope"], "error: --only: unknown workload(s) nope"),
        (["dlq", "retry", "ingest"], "error: give a SEQ or --all"),
        (["verify", "--expect", "/no/such/file.json"], "error: --expect /no/such/file.json"),
    ],
)
def test_usage_errors_are_one_line(argv: list[str], message: str) -> None:
    out = lakehouse(*argv)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), out.stderr


@pytest.mark.parametrize(
    "verb", [["up"], ["gateway"], ["worker"], ["dlq", "show"], ["dlq", "retry"]] + [
        c[:2] if c[0] in ("dlq", "catalog") else c[:1] for c in CONNECTED
    ]
)  # fmt: skip
def test_every_connected_command_takes_the_same_options(verb: list[str]) -> None:
    out = lakehouse(*verb, "--help")
    assert out.returncode == 0, out.stderr
    for option in ("--config", "--nats-url", "--data-dir", "--storage"):
        assert option in out.stdout, option
