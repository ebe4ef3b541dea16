"""Fault-test rows (crash matrix and chaos): time to recover, acknowledged messages lost,
duplicates applied.

A row is recorded after its test's checks passed, so ``lost`` and ``duplicates`` are what the
test counted (0, or it would have failed). Every pytest process (``-n 2`` runs two) appends to
one JSONL file, emptied when a run starts; the run's terminal summary prints the rows as the
Markdown table that docs/RELIABILITY.md keeps."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lakehouse.platform.procs import REPO_ROOT

LOG = Path(
    os.environ.get("LAKEHOUSE_RECOVERY_LOG", REPO_ROOT / "test-artifacts" / "recovery.jsonl")
)


def record(row: str, seconds: float, checked: str, *, lost: int = 0, duplicates: int = 0) -> None:
    """One row: what was broken (``row``), seconds until the checks held again, what was
    checked, acknowledged messages lost and duplicates applied."""
    line = json.dumps(
        {"row": row, "seconds": round(seconds, 2), "checked": checked, "lost": lost,
         "duplicates": duplicates}
    )  # fmt: skip
    LOG.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())  # one write: lines from two processes never mix
    finally:
        os.close(fd)


def reset() -> None:
    LOG.unlink(missing_ok=True)


def rows() -> list[dict[str, Any]]:
    if not LOG.exists():
        return []
    return [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]


def table(items: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, in the order they were recorded."""
    out = [
        "| fault | time to recover | acked lost | duplicates | checked |",
        "|---|---:|---:|---:|---|",
    ]
    for r in items:
        out.append(
            f"| {r['row']} | {r['seconds']:.2f} s | {r['lost']} | {r['duplicates']} "
            f"| {r['checked']} |"
        )
    return "\n".join(out)
