"""``lakehouse bench --compare``: ratios judged by their unit's direction, with a tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lakehouse.devtools.bench import compare


def run_of(**ratios: tuple[str, float | None]) -> dict[str, object]:
    return {
        "header": "test",
        "rows": [
            {"workload": name, "unit": unit, "ours": 1.0, "floor": 1.0, "ratio": ratio}
            for name, (unit, ratio) in ratios.items()
        ],
    }


def test_worse_follows_the_unit_and_the_tolerance() -> None:
    baseline = run_of(
        ingest=("s", 1.5), load=("vec/s", 0.5), search=("ms", 2.0), qps=("QPS", 0.10),
        rss=("MiB", None), gone=("s", 1.0), **{"recall@10 vs brute force": ("", 1.0)},
    )  # fmt: skip
    current = run_of(
        ingest=("s", 2.0),  # +33% time: worse
        load=("vec/s", 0.45),  # -10% rate: within 25%
        search=("ms", 1.0),  # half the time: better
        qps=("QPS", 0.05),  # half the rate: worse
        fresh=("s", 3.0),  # not in the baseline
        **{"recall@10 vs brute force": ("", 0.5)},  # recall halved: worse, whatever the unit
    )
    table, worse = compare.report(compare.changes(baseline, current))
    assert [c.workload for c in worse] == ["ingest", "qps", "recall@10 vs brute force"]
    verdicts = {ln.split("|")[1].strip(): ln.split("|")[5].strip() for ln in table.splitlines()[2:]}
    assert verdicts == {
        "ingest": "WORSE", "load": "same", "search": "better", "qps": "WORSE", "fresh": "new",
        "recall@10 vs brute force": "WORSE", "gone": "not run",
    }  # fmt: skip
    assert "+33% worse" in table and "rss" not in table  # rows without a floor are not ratios
    _, loose = compare.report(compare.changes(baseline, current), tolerance=1.0)
    assert loose == []


def test_a_file_that_is_not_a_result_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"nope": 1}))
    with pytest.raises(ValueError, match="not a benchmark result"):
        compare.load(bad)
    with pytest.raises(ValueError, match="not a benchmark result"):
        compare.load(tmp_path / "missing.json")
