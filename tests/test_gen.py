"""Synthetic staffing CSV generator: determinism, RFC 4180 shape, content and dirty cells."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lakehouse.devtools.datagen import COLUMNS, MIDWEST, ROLES, generate, iter_rows

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRED_ROLES = [
    "Electrician", "Forklift Operator", "Material Handler", "CNC Operator", "Quality Technician",
    "Welder", "Assembler", "Machine Operator", "Warehouse Associate", "Order Picker",
    "Maintenance Technician", "Production Worker", "Shipping and Receiving Clerk",
    "Truck Driver (CDL-A)", "HVAC Technician", "Plumber", "Carpenter", "Packer", "Inventory Clerk",
]  # fmt: skip


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[list[str]]]:
    """A 5,000-row file: its bytes and its parsed records (header included)."""
    path = tmp_path_factory.mktemp("gen") / "workers.csv"
    seen: list[int] = []
    n = generate(path, 5000, progress=seen.append)
    data = path.read_bytes()
    assert n == len(data) and seen and seen[-1] == 5000
    return data, list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def test_same_seed_is_byte_identical(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    assert generate(a, 1200, seed=7) == generate(b, 1200, seed=7)
    assert a.read_bytes() == b.read_bytes()
    generate(c, 1200, seed=8)
    assert c.read_bytes() != a.read_bytes()


def test_deterministic_across_hash_seeds(tmp_path: Path) -> None:
    """No dependence on set/dict hash order: another process with another PYTHONHASHSEED."""
    generate(tmp_path / "here.csv", 300, seed=3)
    code = (
        "import sys; from pathlib import Path; from lakehouse.devtools.datagen import generate; "
        "generate(Path(sys.argv[1]), 300, seed=3)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    argv = [sys.executable, "-c", code, str(tmp_path / "there.csv")]
    subprocess.run(argv, check=True, env=env, cwd=REPO_ROOT)
    assert (tmp_path / "here.csv").read_bytes() == (tmp_path / "there.csv").read_bytes()


def test_shape_and_quoting(big: tuple[bytes, list[list[str]]]) -> None:
    data, records = big
    assert records[0] == COLUMNS and len(COLUMNS) == 18
    body = records[1:]
    assert len(body) == 5000 and all(len(r) == 18 for r in body)
    assert [int(r[0]) for r in body] == list(range(1, 5001))
    assert b"\r" not in data and data.endswith(b"\n")
    assert data.startswith(",".join(COLUMNS).encode() + b"\n")
    resumes = [r[17] for r in body]
    assert all(2 <= t.count("\n") + 1 <= 6 for t in resumes)
    assert any(t.count("\n") >= 3 for t in resumes) and any("," in t for t in resumes)
    assert b'""Employee of the Month""' in data  # embedded quotes are doubled
    assert any(", " in r[8] for r in body) and any(", " in r[15] for r in body)
    # RFC 4180 minimal quoting: re-serialising with csv QUOTE_MINIMAL gives the same bytes
    out = io.StringIO()
    csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL).writerows(records)
    assert out.getvalue().encode("utf-8") == data


def test_iter_rows_matches_file(big: tuple[bytes, list[list[str]]]) -> None:
    assert list(iter_rows(50)) == big[1][1:51]


def test_value_domains(big: tuple[bytes, list[list[str]]]) -> None:
    body = big[1][1:]
    assert {r[13] for r in body} == {"true", "false"}
    assert {r[14] for r in body} == {"day", "night", "swing"}
    for r in body:
        assert 0.0 <= float(r[12]) <= 1.0 and len(r[12].split(".")[1]) == 3
        assert r[11] in ("", "N/A") or len(r[11].split(".")[1]) == 2
        assert r[10] == "N/A" or 0 <= int(r[10]) <= 35
        assert len(r[5]) == 5 and r[5].isdigit() and len(r[16]) == 10
        assert r[2] in ROLES and r[8]


def test_dirty_cells(big: tuple[bytes, list[list[str]]]) -> None:
    body = big[1][1:]
    assert not any("N/A" in f for r in body[:1000] for f in r)
    assert any("N/A" in f for r in body[1000:] for f in r)
    empties = Counter(i for r in body for i, f in enumerate(r) if f == "")
    for col in ("hourly_rate", "certifications", "languages"):
        assert 0 < empties[COLUMNS.index(col)] < 100  # ~0.5% of 5,000
    assert body[1499][11] == "N/A"  # worker 1500


def test_no_na_in_small_files(tmp_path: Path) -> None:
    generate(tmp_path / "s.csv", 1000)
    assert b"N/A" not in (tmp_path / "s.csv").read_bytes()


def test_content_is_midwest_industrial(big: tuple[bytes, list[list[str]]]) -> None:
    data, records = big
    body = records[1:]
    low = data.lower()
    for banned in (b"dental", b"hygienist", b"nurse"):
        assert banned not in low
    states = Counter(r[4] for r in body)
    assert sum(states[s] for s in MIDWEST) >= 0.9 * len(body)
    roles = Counter(r[2] for r in body)
    assert [r for r in REQUIRED_ROLES if roles[r] == 0] == []
    electricians = [r for r in body if r[2] == "Electrician"]
    assert any("conduit bending" in r[8] or "conduit" in r[17] for r in electricians)
    chicago = [r for r in body if r[3] == "Chicago"]
    assert chicago and all(r[4] == "IL" and r[5].startswith("606") for r in chicago)


def test_empty_file(tmp_path: Path) -> None:
    n = generate(tmp_path / "e.csv", 0)
    assert (tmp_path / "e.csv").read_bytes() == (",".join(COLUMNS) + "\n").encode()
    assert n == len(",".join(COLUMNS)) + 1
