"""The regression guard: a run's ratios next to a baseline run's (``lakehouse bench --compare``).

Only ratios are compared (ours ÷ the floor measured in the same run), never raw timings: the
floor absorbs the machine's speed and load, so a ratio from another day or machine still
means something. Whether bigger is worse follows the unit: for rates (``/s``) and recall a
smaller ratio is worse, for times, sizes and memory a bigger one. A row only in one of the two
runs is listed, never judged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOLERANCE = 0.25
"""A ratio may worsen by this fraction before it counts: runs on a shared 2-core machine move
by up to ~15% between runs (docs/BENCHMARKS.md)."""


def higher_is_better(unit: str, workload: str = "") -> bool:
    """Rates (``/s``, QPS) and recall: bigger is better. Times, sizes, memory: smaller."""
    return "/s" in unit or unit == "QPS" or "recall" in f"{unit} {workload}".lower()


@dataclass
class Change:
    workload: str
    unit: str
    before: float | None
    after: float | None

    @property
    def change(self) -> float | None:
        """How much worse (positive) or better (negative), as a fraction of ``before``."""
        if self.before is None or self.after is None or self.before == 0:
            return None
        delta = (self.after - self.before) / self.before
        return -delta if higher_is_better(self.unit, self.workload) else delta


def load(path: Path) -> dict[str, Any]:
    """A run written by ``lakehouse bench --out`` (or ``--json``)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a benchmark result ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: not a benchmark result (no rows)")
    return data


def changes(baseline: dict[str, Any], current: dict[str, Any]) -> list[Change]:
    """One Change per workload with a ratio in either run, in the current run's order."""
    before = {r["workload"]: r for r in baseline["rows"] if r.get("ratio") is not None}
    after = {r["workload"]: r for r in current["rows"] if r.get("ratio") is not None}
    names = list(after) + [n for n in before if n not in after]
    return [
        Change(
            name,
            (after.get(name) or before[name])["unit"],
            before[name]["ratio"] if name in before else None,
            after[name]["ratio"] if name in after else None,
        )
        for name in names
    ]


def report(items: list[Change], tolerance: float = TOLERANCE) -> tuple[str, list[Change]]:
    """A Markdown table of every ratio's change, and the changes worse than ``tolerance``."""
    lines = [
        f"| workload | baseline ratio | this run | change | verdict (tolerance {tolerance:.0%}) |",
        "|---|---|---|---|---|",
    ]
    worse: list[Change] = []
    for c in items:
        ch = c.change
        if c.before is None:
            verdict = "new"
        elif c.after is None:
            verdict = "not run"
        elif ch is not None and ch > tolerance:
            verdict = "WORSE"
            worse.append(c)
        elif ch is not None and ch < -tolerance:
            verdict = "better"
        else:
            verdict = "same"
        b = "—" if c.before is None else f"{c.before:.2f}×"
        a = "—" if c.after is None else f"{c.after:.2f}×"
        pct = "—" if ch is None else f"{ch:+.0%} {'worse' if ch > 0 else 'better'}"
        lines.append(f"| {c.workload} | {b} | {a} | {pct} | {verdict} |")
    return "\n".join(lines), worse
