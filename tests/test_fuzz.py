"""Fuzzing (Hypothesis) of the two parsers fed by people and other processes: CSV -> Parquet
conversion (what the ingest worker runs on an upload) and the binary vector batch decoder
(what the vector worker and replay run on every batch).

The property: an input is converted exactly, or rejected with the project's bad-input error
(CsvError, which the ingest worker turns into a 400 "invalid CSV"; BadRequest for a batch)
whose message names the problem. No other exception type escapes, and a rejected conversion
leaves no file behind.

Deterministic (``derandomize=True``: the same examples on every run) and bounded: the whole
file runs in a few seconds. Every input that once broke something is kept as an ``@example``
with a comment naming what broke; widen ``max_examples`` locally to hunt for more.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lakehouse.platform.config import LimitsSettings
from lakehouse.platform.errors import BadRequest
from lakehouse.tables.csv2parquet import Converted, CsvError, convert
from lakehouse.vectors.batches import Batch, decode, encode

FUZZ = settings(derandomize=True, deadline=timedelta(seconds=5), max_examples=100)

# ---- CSV: what to write ---------------------------------------------------------------------

SPECIAL = ",\"\r\n \t;'\x00\ufeffé€ſK"  # delimiters, quotes, line ends, BOM, look-alikes
TEXT = st.text(st.one_of(st.sampled_from(SPECIAL), st.characters(codec="utf-8")), max_size=8)


def any_case(word: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flips.map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(word, up, strict=True))
    )


WORDS = st.sampled_from(["nan", "inf", "infinity", "true", "false"]).flatmap(any_case)
CELLS = {
    "int": st.one_of(
        st.integers(-(2**70), 2**70).map(str),
        st.sampled_from(["007", "+5", "-0", "9223372036854775807", "-9223372036854775808"]),
        st.sampled_from(["9223372036854775808", "0" * 30 + "1", "5\n", "٣", "1 "]),
    ),
    "float": st.one_of(
        st.floats().map(repr),
        st.floats(width=32).map(str),
        st.sampled_from(["1.50", ".5", "5.", "1e400", "-1E-400", "+inf", "-Infinity", "0x1F"]),
        st.sampled_from(["1_000", "1,5", " 1.5", "1.5 ", "1e", "e5", ".", "+-1"]),
        WORDS,
    ),
    "bool": st.one_of(WORDS, st.sampled_from(["falſe", "yes", "T", "1", "0", "true "])),
    "date": st.one_of(st.dates().map(date.isoformat), st.sampled_from(["2024-13-45", "1/2/24"])),
    "text": TEXT,
}
KINDS = list(CELLS)


@dataclass(frozen=True)
class Dialect:
    quote_all: bool
    eol: str
    bom: bool
    final_eol: bool
    blank_lines: bool  # a blank line before the header and after every row


@dataclass(frozen=True)
class Table:
    names: list[str]
    rows: list[list[str]]  # "" is an empty cell


@st.composite
def cell(draw: st.DrawFn, kind: str) -> str:
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return ""
    if roll == 1:  # a misfit, possibly after the sample: the column widens to string
        return draw(CELLS[draw(st.sampled_from(KINDS))])
    return draw(CELLS[kind])


@st.composite
def tables(draw: st.DrawFn, max_columns: int = 4, max_rows: int = 6) -> Table:
    names = draw(st.lists(TEXT.filter(bool), min_size=1, max_size=max_columns, unique=True))
    kinds = [draw(st.sampled_from(KINDS)) for _ in names]
    n = draw(st.integers(0, max_rows))
    return Table(names, [[draw(cell(kind)) for kind in kinds] for _ in range(n)])


DIALECTS = st.builds(
    Dialect,
    st.booleans(),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)


def field(value: str, quote_all: bool, alone: bool, encoding: str, bad: tuple[int, bytes]) -> bytes:
    """One field, quoted when it must be (an only field that is empty would be a blank line);
    ``bad`` inserts raw bytes (e.g. invalid UTF-8) at a character offset of the value."""
    at, raw = bad
    bom = value.encode(encoding).startswith(b"\xef\xbb\xbf")  # read as a BOM at file start
    quote = quote_all or (alone and not value and not raw) or bom
    quote = quote or any(c in value for c in ',"\r\n')
    left, right = value[:at], value[at:]
    if quote:
        left, right = left.replace('"', '""'), right.replace('"', '""')
    body = left.encode(encoding) + raw + right.encode(encoding)
    return b'"' + body + b'"' if quote else body


def csv_bytes(
    table: Table,
    dialect: Dialect,
    encoding: str = "utf-8",
    bad: tuple[int, int, int, bytes] | None = None,
) -> bytes:
    """The table as a CSV file; ``bad`` = (line, column, offset, bytes), line 0 the header."""
    eol = dialect.eol.encode()
    out = [b"\xef\xbb\xbf" if dialect.bom else b""]
    if dialect.blank_lines:
        out.append(eol)
    for line, values in enumerate([table.names, *table.rows]):
        fields = [
            field(
                value,
                dialect.quote_all,
                len(values) == 1,
                encoding,
                (bad[2], bad[3]) if bad and bad[:2] == (line, j) else (0, b""),
            )
            for j, value in enumerate(values)
        ]
        out += [b",".join(fields), eol, eol if dialect.blank_lines and line else b""]
    data = b"".join(out)
    if not dialect.final_eol:
        data = data.rstrip(eol)  # one or two line ends; a quoted last field keeps its own
    return data


# ---- CSV: the reference (ADR-010's type rule, written out independently) --------------------

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)",
    re.IGNORECASE | re.ASCII,  # ASCII: "ſ" is no "s", nor "K" (Kelvin) a "k"
)
FITS: dict[str, Callable[[str], bool]] = {
    "int64": lambda v: bool(_INT.fullmatch(v)) and -(2**63) <= int(v) < 2**63,
    "float64": lambda v: bool(_FLOAT.fullmatch(v)),
    "bool": lambda v: v.isascii() and v.lower() in ("true", "false"),
}
PARSE: dict[str, Callable[[str], Any]] = {
    "int64": int,
    "float64": float,
    "bool": lambda v: v.lower() == "true",
    "string": str,
}


def expected(table: Table, sample_rows: int) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, type) per column and the columns widened after the sample."""
    types, widened = [], []
    for j, name in enumerate(table.names):
        values = [row[j] for row in table.rows if row[j]]
        sample = [row[j] for row in table.rows[:sample_rows] if row[j]]
        type_ = next((t for t in FITS if all(FITS[t](v) for v in sample)), "string")
        type_ = type_ if sample else "string"
        if type_ != "string" and not all(FITS[type_](v) for v in values):
            type_ = "string"  # a value after the sample misfits
            widened.append(name)
        types.append((name, type_))
    return types, widened


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b) and type(a) is type(b)


def check_exact(result: Converted, dst: Path, table: Table, sample_rows: int) -> None:
    types, widened = expected(table, sample_rows)
    assert [(c.name, c.type) for c in result.columns] == types
    assert result.widened == widened
    assert result.rows == len(table.rows) == pq.read_metadata(dst).num_rows
    got = pq.read_table(dst).to_pydict()
    assert list(got) == table.names
    for j, (name, type_) in enumerate(types):
        cells = [row[j] for row in table.rows]
        want = [PARSE[type_](v) if v else ("" if type_ == "string" else None) for v in cells]
        assert all(same(w, g) for w, g in zip(want, got[name], strict=True)), (name, want, got)
        assert result.columns[j].nullable == (type_ != "string" and "" in cells)


def converted(
    data: bytes, check: Callable[[Converted, Path], None] | None = None, **kw: Any
) -> Converted | CsvError:
    """Convert ``data`` in a fresh directory: the CsvError (once checked that nothing but the
    input is left there), or the result (once ``check(result, parquet file)`` passed)."""
    with TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.csv", Path(tmp) / "out.parquet"
        src.write_bytes(data)
        try:
            result = convert(src, dst, **kw)
        except CsvError as exc:
            assert str(exc)
            assert sorted(p.name for p in Path(tmp).iterdir()) == ["in.csv"]
            return exc
        assert result.size == dst.stat().st_size
        if check is not None:
            check(result, dst)
        return result


# ---- CSV: the properties --------------------------------------------------------------------


PLAIN = Dialect(quote_all=False, eol="\n", bom=False, final_eol=True, blank_lines=False)


@settings(FUZZ, max_examples=100)
@given(
    table=tables(),
    dialect=DIALECTS,
    encoding=st.sampled_from(["utf-8", "latin-1"]),
    sample_rows=st.sampled_from([0, 1, 2, 1000]),
    limits=st.sampled_from([(0, 0), (0, 0), (2, 0), (0, 3), (0, 12)]),
)
@example(  # a header with no line end after it: "Empty CSV file or block", refused
    table=Table(["0"], []),
    dialect=replace(PLAIN, final_eol=False),
    encoding="utf-8",
    sample_rows=0,
    limits=(0, 0),
)
@example(  # RE2's (?i:false) matches "falſe" (long s folds to s): typed bool, read as False
    table=Table(["0"], [["falſe"], ["true"]]),
    dialect=PLAIN,
    encoding="utf-8",
    sample_rows=1000,
    limits=(0, 0),
)
@example(  # (the test's own oracle) latin-1 "Î\x83" is valid UTF-8: "\u0383", not an error
    table=Table(["Î\x83"], [["é"]]),
    dialect=PLAIN,
    encoding="latin-1",
    sample_rows=1000,
    limits=(0, 0),
)
@example(  # (the test's own oracle) all of it valid UTF-8 although not ASCII
    table=Table(["Â\x80"], []), dialect=PLAIN, encoding="latin-1", sample_rows=0, limits=(0, 0)
)
def test_well_formed_csv_converts_exactly(
    table: Table, dialect: Dialect, encoding: str, sample_rows: int, limits: tuple[int, int]
) -> None:
    """Quoting, line ends, BOM, blank lines, every type and its look-alikes; latin-1 bytes
    convert (as UTF-8) when they happen to be valid UTF-8 and are otherwise refused as not
    UTF-8, naming the first row that is not. Under limits (max_columns, max_cell_bytes) a
    table over one is refused naming the first column name or field over it."""
    if encoding == "latin-1":  # what a latin-1 export of this table would hold
        latin = [v.encode("latin-1", "replace").decode("latin-1") for v in table.names]
        rows = [[v.encode("latin-1", "replace").decode("latin-1") for v in r] for r in table.rows]
        if len(set(latin)) < len(latin):
            return
        table = Table(latin, rows)
    data = csv_bytes(table, dialect, encoding)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        exc = converted(data, sample_rows=sample_rows)
        assert isinstance(exc, CsvError), "invalid UTF-8 was converted"
        where = next(  # the first line that is not UTF-8 (latin-1 "Î\x83" is: "\u0383")
            i
            for i, values in enumerate([table.names, *table.rows])
            if not all(utf8(v.encode("latin-1")) for v in values)
        )
        assert "not valid UTF-8" in str(exc)
        assert ("header row" if where == 0 else f"data row {where} (") in str(exc), str(exc)
        return
    if encoding == "latin-1":  # valid UTF-8 after all (ASCII, or "Â\x80", which is "\x80")

        def read(v: str) -> str:
            return v.encode("latin-1").decode("utf-8")

        table = Table([read(v) for v in table.names], [[read(v) for v in r] for r in table.rows])
    max_columns, max_cell_bytes = limits
    kw = dict(sample_rows=sample_rows, max_columns=max_columns, max_cell_bytes=max_cell_bytes)
    refusal = over_limit(table, max_columns, max_cell_bytes)
    result = converted(data, lambda r, dst: check_exact(r, dst, table, sample_rows), **kw)
    if refusal is not None:
        assert isinstance(result, CsvError), f"converted although {refusal}"
        assert str(result).startswith(refusal), (str(result), refusal)
        return
    assert isinstance(result, Converted), f"a well-formed CSV was refused: {result}"


def over_limit(table: Table, max_columns: int, max_cell_bytes: int) -> str | None:
    """How the refusal of a table over a limit must start; None when it is within them."""
    if max_columns and len(table.names) > max_columns:
        return f"CSV has {len(table.names)} columns; the limit is {max_columns} (limits."
    sizes = [len(name.encode()) for name in table.names]
    if max_cell_bytes and max(sizes) > max_cell_bytes:
        i = next(i for i, size in enumerate(sizes) if size > max_cell_bytes)
        return f"the header's column {i + 1} name is {sizes[i]} bytes; the limit is "
    for r, row in enumerate(table.rows, 1):
        for name, value in zip(table.names, row, strict=True):
            if max_cell_bytes and len(value.encode()) > max_cell_bytes:
                return f"data row {r}, column {name!r}, has a field of {len(value.encode())} "
    return None


BAD_UTF8 = st.sampled_from(
    [b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe2\x82"]
)


@st.composite
def with_bad_bytes(draw: st.DrawFn) -> tuple[Table, Dialect, tuple[int, int, int, bytes]]:
    table, dialect = draw(tables()), draw(DIALECTS)
    line = draw(st.integers(0, len(table.rows)))
    values = [table.names, *table.rows][line]
    column = draw(st.integers(0, len(values) - 1))
    offset = draw(st.integers(0, len(values[column])))
    return table, dialect, (line, column, offset, draw(BAD_UTF8))


@settings(FUZZ, max_examples=40)
@given(case=with_bad_bytes())
def test_invalid_utf8_is_refused_naming_the_row_and_column(
    case: tuple[Table, Dialect, tuple[int, int, int, bytes]],
) -> None:
    table, dialect, bad = case
    line, column = bad[:2]
    exc = converted(csv_bytes(table, dialect, bad=bad))
    assert isinstance(exc, CsvError), "invalid UTF-8 was converted"
    if line == 0:
        assert f"the header row is not valid UTF-8 (column {column + 1})" in str(exc), str(exc)
    else:
        name = table.names[column]
        assert f"data row {line} (" in str(exc), str(exc)
        assert f"is not valid UTF-8 (column {name!r})" in str(exc), str(exc)


@st.composite
def ragged(draw: st.DrawFn) -> tuple[Table, Dialect, int, int]:
    """A table with one row of another width: (table, dialect, that row, its width)."""
    table, dialect = draw(tables().filter(lambda t: bool(t.rows))), draw(DIALECTS)
    r = draw(st.integers(0, len(table.rows) - 1))
    width = len(table.names)
    new = draw(st.integers(1, width + 2).filter(lambda w: w != width))
    extra = [draw(CELLS["text"]) for _ in range(new)]
    rows = [list(row) for row in table.rows]
    rows[r] = (rows[r] + extra)[:new]
    return Table(table.names, rows), dialect, r, new


@settings(FUZZ, max_examples=40)
@given(case=ragged())
def test_ragged_rows_are_refused_naming_the_row(case: tuple[Table, Dialect, int, int]) -> None:
    table, dialect, r, new = case
    exc = converted(csv_bytes(table, dialect))
    assert isinstance(exc, CsvError), "a row with the wrong number of fields was converted"
    fields = f"{new} field{'s' * (new != 1)}"
    assert f"data row {r + 1} (" in str(exc), str(exc)
    assert f"has {fields}; the header has {len(table.names)}" in str(exc), str(exc)


def utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def stdlib_rows(data: bytes) -> list[list[str]] | None:
    """What Python's csv module reads (blank rows skipped), None when it cannot or a value is
    not UTF-8. Parsed as bytes, like pyarrow: text after a closing quote is kept and the
    quote dropped, so the bytes "a<EF><BB>"<BF> (a quote inside a BOM's encoding) read as the
    valid "a\ufeff" although the file is not UTF-8 (accepted: catching that would cost every
    upload a second read of its file)."""
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogateescape")
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
        return [[v.encode("utf-8", "surrogateescape").decode() for v in row] for row in rows]
    except (UnicodeDecodeError, csv.Error):
        return None


def agrees_with_stdlib(data: bytes) -> Callable[[Converted, Path], None]:
    def check(result: Converted, dst: Path) -> None:
        rows = stdlib_rows(data)
        assert rows is not None, "converted what the csv module cannot read"
        assert [c.name for c in result.columns] == rows[0]
        assert result.rows == len(rows) - 1
        got = pq.read_table(dst).to_pydict()
        for j, c in enumerate(result.columns):
            want = [PARSE[c.type](r[j]) if r[j] else None for r in rows[1:]]
            want = ["" if w is None and c.type == "string" else w for w in want]
            assert all(same(w, g) for w, g in zip(want, got[c.name], strict=True)), c.name

    return check


MUTATIONS = st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate"])
NASTY = st.sampled_from(
    [b'"', b",", b"\n", b"\r", b'""', b'"\n', b"\x00", b"\xff", b"\xef\xbb\xbf", b" "]
)


@st.composite
def damaged_csv(draw: st.DrawFn) -> bytes:
    raw = bytearray(csv_bytes(draw(tables()), draw(DIALECTS)))
    for _ in range(draw(st.integers(1, 3))):
        what, at = draw(MUTATIONS), draw(st.integers(0, len(raw)))
        if what == "insert":
            raw[at:at] = draw(NASTY)
        elif what == "delete":
            del raw[at : at + draw(st.integers(1, 3))]
        elif what == "replace":
            raw[at : at + 1] = draw(NASTY)
        elif what == "truncate":
            del raw[at:]
        else:
            raw[at:at] = raw[at : at + draw(st.integers(1, 8))]
    return bytes(raw)


@settings(FUZZ, max_examples=100)
@given(raw=damaged_csv())
@example(raw=b'a\n"x\xef\xbb"\xbfy\n')  # not UTF-8, yet converted: "x\ufeffy" (see stdlib_rows)
@example(raw=b'a,b\n1,"x""\n')  # an unterminated quote whose value ends in an escaped quote
def test_damaged_csv_converts_as_the_csv_module_reads_it_or_is_refused(raw: bytes) -> None:
    """Stray and unterminated quotes, cut files, NULs, BOMs mid-file: either refused with
    CsvError, or converted to exactly the rows and text Python's csv module reads."""
    converted(raw, agrees_with_stdlib(raw))


# ---- CSV: the limits (limits.max_csv_columns, limits.max_cell_bytes) --------------------------


def test_settings_hold_the_csv_limits() -> None:
    limits = LimitsSettings()
    assert (limits.max_csv_columns, limits.max_cell_bytes) == (2000, 8 << 20)


def test_too_many_columns_is_refused_naming_the_limit(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out.parquet"
    src.write_text(",".join(f"c{i}" for i in range(2500)) + "\n" + ",".join("1" * 2500) + "\n")
    with pytest.raises(CsvError) as info:
        convert(src, dst, max_columns=2000)
    assert str(info.value) == "CSV has 2500 columns; the limit is 2000 (limits.max_csv_columns)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    src.write_text("a,b,c\n1,2,3\n")
    assert convert(src, dst, max_columns=3).rows == 1  # at the limit: fine


@pytest.mark.parametrize("where", ["sample", "after the sample", "header"])
def test_a_cell_over_the_limit_is_refused_naming_row_and_column(tmp_path: Path, where: str) -> None:
    limit = 1000
    big = "é" * (limit // 2) + "x"  # 1001 bytes, 501 characters: the limit counts bytes
    src, dst = tmp_path / "in.csv", tmp_path / "out.parquet"
    rows = [f'{i},"{"ok"}"' for i in range(1, 6)]
    if where == "header":
        src.write_text(f'id,"{big}"\n' + "\n".join(rows) + "\n")
        message = f"the header's column 2 name is {len(big.encode())} bytes"
    else:
        at = 2 if where == "sample" else 5
        rows[at - 1] = f'{at},"a\n{big}"'
        src.write_text("id,text\n" + "\n".join(rows) + "\n")
        message = f"data row {at}, column 'text', has a field of {len(big.encode()) + 2} bytes"
    with pytest.raises(CsvError) as info:
        convert(src, dst, sample_rows=3, max_cell_bytes=limit)
    assert str(info.value).startswith(message), str(info.value)
    assert str(info.value).endswith(f"the limit is {limit} (limits.max_cell_bytes)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    src.write_text(f'id,text\n1,"{"y" * limit}"\n')  # at the limit: fine
    assert convert(src, dst, max_cell_bytes=limit).rows == 1


# ---- Vector batches -------------------------------------------------------------------------

DIMS = st.integers(1, 6)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
METADATA = st.none() | st.dictionaries(TEXT, JSON, max_size=3)


@st.composite
def batches(draw: st.DrawFn, finite: bool = False) -> tuple[list[str], str, np.ndarray, list[Any]]:
    dim, n = draw(DIMS), draw(st.integers(0, 5))
    ids = draw(st.lists(TEXT, min_size=n, max_size=n))
    op = draw(st.sampled_from(["upsert", "delete"]))
    floats = st.floats(width=32, allow_nan=not finite, allow_infinity=not finite)
    values = draw(st.lists(floats, min_size=n * dim, max_size=n * dim))
    vectors = np.asarray(values, dtype=np.float32).reshape(n, dim)
    return ids, op, vectors, draw(st.lists(METADATA, min_size=n, max_size=n))


def well_formed(batch: Batch, dim: int) -> None:
    n = len(batch.ids)
    assert all(isinstance(i, str) for i in batch.ids)
    assert len(batch.ops) == len(batch.metadata) == n and set(batch.ops) <= {"upsert", "delete"}
    assert batch.vectors.shape == (n, dim) and batch.vectors.dtype == np.float32
    ups = np.array([op == "upsert" for op in batch.ops], dtype=bool)
    assert np.isfinite(batch.vectors[ups]).all() and not batch.vectors[~ups].any()
    assert all(m is None or isinstance(m, dict) for m in batch.metadata)


def decoded(data: bytes, dim: int) -> Batch | BadRequest:
    """decode's answer: a well-formed Batch, or BadRequest with a message; nothing else."""
    try:
        batch = decode(data, dim)
    except BadRequest as exc:
        assert exc.status == 400 and exc.detail
        return exc
    well_formed(batch, dim)
    return batch


@settings(FUZZ, max_examples=100)
@given(batch=batches(), wrong=st.integers(-2, 2))
@example(  # a NaN component was accepted and went into the HNSW graph (its distances NaN)
    batch=(["a"], "upsert", np.array([[np.nan, 1.0]], np.float32), [None]), wrong=0
)
def test_vector_batch_round_trips_or_refuses_nan(
    batch: tuple[list[str], str, np.ndarray, list[Any]], wrong: int
) -> None:
    ids, op, vectors, metadata = batch
    dim = vectors.shape[1]
    data = encode(ids, vectors, metadata, dim=dim, op=op)
    if wrong and dim + wrong > 0:
        answer = decoded(data, dim + wrong)
        assert isinstance(answer, BadRequest) and "dimension" in str(answer.detail)
        return
    answer = decoded(data, dim)
    if op == "upsert" and not np.isfinite(vectors).all():
        assert isinstance(answer, BadRequest), "a NaN or infinite vector was accepted"
        assert "NaN or infinite" in str(answer.detail)
        return
    assert isinstance(answer, Batch), answer
    assert answer.ids == ids and answer.ops == [op] * len(ids)
    assert answer.metadata == metadata
    assert np.array_equal(answer.vectors, vectors if op == "upsert" else np.zeros_like(vectors))


def ipc(table: pa.Table, **options: Any) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(**options)) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


VEC = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0], pa.float32()), 2)


def table_of(**columns: Any) -> pa.Table:
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


ARROW_DAMAGE = st.sampled_from(
    ["truncate", "flip", "int32", "int64", "insert", "append", "drop_eos", "garbage"]
)
HUGE = st.sampled_from([2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**62, 2**63 - 1, -1, -(2**31)])


@st.composite
def damaged_batches(draw: st.DrawFn) -> tuple[str, bytes, bytes, int]:
    """(damage, the batch as encoded, the damaged bytes, dim)."""
    ids, op, vectors, metadata = draw(batches(finite=True))
    original = encode(ids, vectors, metadata, dim=vectors.shape[1], op=op)
    raw = bytearray(original)
    what = draw(ARROW_DAMAGE)
    at = draw(st.integers(0, len(raw) - 1))
    if what == "truncate":
        del raw[at:]
    elif what == "flip":
        raw[at] ^= 1 << draw(st.integers(0, 7))
    elif what in ("int32", "int64"):
        size = 4 if what == "int32" else 8
        at -= at % size  # Arrow's counts and lengths are aligned
        raw[at : at + size] = (draw(HUGE) % (1 << 8 * size)).to_bytes(size, "little")
    elif what == "insert":
        raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    elif what == "append":
        raw += draw(st.binary(min_size=1, max_size=16))
    elif what == "drop_eos":
        del raw[-8:]
    else:
        raw = bytearray(draw(st.binary(max_size=64)))
    return what, original, bytes(raw), vectors.shape[1]


@settings(FUZZ, max_examples=150)
@given(case=damaged_batches())
def test_damaged_vector_batch_decodes_well_formed_or_is_refused(
    case: tuple[str, bytes, bytes, int],
) -> None:
    """Cut, flipped, overwritten with huge counts, padded, or pure garbage: BadRequest, or
    (when the damage hit only a vector's float bytes, say) a well-formed batch."""
    what, original, raw, dim = case
    answer = decoded(raw, dim)
    if what in ("truncate", "insert", "append", "drop_eos") and raw != original:
        assert isinstance(answer, BadRequest), f"a batch damaged by {what} was accepted"


def _int8(v: float | None) -> int | None:
    return None if v is None else int(v) % 100 if math.isfinite(v) else 0


def vector_column(kind: str, rows: list[list[float | None] | None], dim: int) -> pa.Array:
    flat = [v for r in rows for v in ((r or []) + [0.0] * dim)[:dim]]  # for fixed-size kinds
    if kind == "fixed":
        mask = pa.array([r is None for r in rows], pa.bool_())
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim, mask=mask)
    if kind == "fixed64":
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float64()), dim)
    if kind == "fixed_str":
        return pa.FixedSizeListArray.from_arrays(pa.array([str(v) for v in flat]), dim)
    if kind == "list":
        return pa.array(rows, pa.list_(pa.float32()))
    if kind == "list_int":
        return pa.array(
            [None if r is None else [_int8(v) for v in r] for r in rows], pa.list_(pa.int8())
        )
    if kind == "list_str":
        return pa.array(
            [None if r is None else [str(v) for v in r] for r in rows], pa.list_(pa.string())
        )
    if kind == "int":
        return pa.array([len(r or []) for r in rows], pa.int64())
    return pa.nulls(len(rows))


@st.composite
def hand_built(draw: st.DrawFn) -> tuple[pa.Table, int]:
    """A batch any Arrow writer could send: other column types, nulls, unknown ops, mixed
    upserts and deletes, vectors of the wrong length, metadata that is not a JSON object."""
    dim, n = draw(DIMS), draw(st.integers(0, 4))
    rows = [
        draw(
            st.none()
            | st.lists(st.floats(width=32), min_size=dim, max_size=dim)
            | st.lists(st.floats(-100, 100, width=32), max_size=dim + 1)
            | st.lists(st.none() | st.floats(width=32), min_size=dim, max_size=dim)
        )
        for _ in range(n)
    ]
    columns: dict[str, Any] = {}
    id_kind = draw(st.sampled_from(["string", "large_string", "int", "nullable", "dictionary"]))
    ids = [f"i{k}" for k in range(n)]
    columns["id"] = {
        "string": pa.array(ids),
        "large_string": pa.array(ids, pa.large_string()),
        "int": pa.array(range(n)),
        "nullable": pa.array([None if k == n - 1 else i for k, i in enumerate(ids)], pa.string()),
        "dictionary": pa.array(ids).dictionary_encode(),
    }[id_kind]
    ops = draw(
        st.none()
        | st.lists(st.sampled_from(["upsert", "delete"]), min_size=n, max_size=n)
        | st.lists(
            st.sampled_from(["upsert", "delete", "DELETE", "", None]), min_size=n, max_size=n
        )
    )
    if ops is not None:
        columns["op"] = pa.array(ops, pa.string())
    vector_kind = draw(
        st.sampled_from(
            ["fixed", "fixed64", "list", "list_int", "list_str", "fixed_str", "int", "null"]
        )
    )
    columns["vector"] = vector_column(vector_kind, rows, dim)
    metas = draw(
        st.none()
        | st.lists(
            METADATA.map(lambda m: None if m is None else json.dumps(m)), min_size=n, max_size=n
        )
        | st.lists(
            st.sampled_from(['{"a": 1}', "[1]", "1", "{", "", '"x"', "[" * 5000]),
            min_size=n,
            max_size=n,
        )
    )
    if metas is not None:
        columns["metadata"] = pa.array(metas, pa.string())
    names, arrays = list(columns), list(columns.values())
    if draw(st.booleans()):  # a duplicated column, e.g. two "id"s
        k = draw(st.integers(0, len(names) - 1))
        names, arrays = [*names, names[k]], [*arrays, arrays[k]]
    return pa.Table.from_arrays(arrays, names=names), dim


def reference(table: pa.Table, dim: int) -> Batch | None:
    """What decode must return for a hand-built table, None where it must refuse."""
    names, n = table.column_names, table.num_rows
    if len(set(names)) < len(names) or not {"id", "vector"} <= set(names):
        return None
    columns = {name: table.column(name) for name in names}
    if not all(
        pa.types.is_string(c.type) or pa.types.is_large_string(c.type)
        for name, c in columns.items()
        if name in ("id", "op", "metadata")
    ):
        return None
    ids = columns["id"].to_pylist()
    ops = columns["op"].to_pylist() if "op" in columns else ["upsert"] * n
    if None in ids or not set(ops) <= {"upsert", "delete"}:
        return None
    vtype = columns["vector"].type
    if not (
        pa.types.is_list(vtype)
        or pa.types.is_large_list(vtype)
        or pa.types.is_fixed_size_list(vtype)
    ):
        return None
    if not (pa.types.is_floating(vtype.value_type) or pa.types.is_integer(vtype.value_type)):
        return None
    vectors = np.zeros((n, dim), np.float32)
    for i, (v, op) in enumerate(zip(columns["vector"].to_pylist(), ops, strict=True)):
        if v is None:
            if op == "upsert":
                return None
            continue
        if len(v) != dim or None in v:
            return None
        row = np.asarray(v, np.float64).astype(np.float32)
        if op == "upsert":
            if not np.isfinite(row).all():
                return None
            vectors[i] = row
    metadata = []
    for m in columns["metadata"].to_pylist() if "metadata" in columns else [None] * n:
        try:
            value = None if m is None else json.loads(m)
        except (ValueError, RecursionError):
            return None
        if value is not None and not isinstance(value, dict):
            return None
        metadata.append(value)
    return Batch(ids, ops, vectors, metadata)


@settings(FUZZ, max_examples=120)
@given(built=hand_built())
@example(  # two "id" columns: KeyError 'Field "id" exists 2 times in schema'
    built=(pa.Table.from_arrays([pa.array(["a"]), VEC, pa.array(["b"])], ["id", "vector", "id"]), 2)
)
@example(built=(table_of(id=pa.array(["a"]), vector=pa.array([2])), 2))  # TypeError: len(int)
@example(  # ValueError: could not convert string to float
    built=(table_of(id=pa.array(["a"]), vector=pa.array([["1", "x"]])), 2)
)
@example(  # JSONDecodeError
    built=(table_of(id=pa.array(["a"]), vector=VEC, metadata=pa.array(["{"])), 2)
)
@example(  # RecursionError from json.loads
    built=(table_of(id=pa.array(["a"]), vector=VEC, metadata=pa.array(["[" * 5000])), 2)
)
@example(  # accepted: metadata a JSON list where an object (or null) belongs
    built=(table_of(id=pa.array(["a"]), vector=VEC, metadata=pa.array(["[1]"])), 2)
)
@example(built=(table_of(id=pa.array([7]), vector=VEC), 2))  # accepted: an int id
@example(built=(table_of(id=pa.array([None], pa.string()), vector=VEC), 2))  # accepted: None
@example(  # accepted, then applied as an upsert (only "delete" deletes)
    built=(table_of(id=pa.array(["a"]), op=pa.array(["DELETE"]), vector=VEC), 2)
)
@example(  # accepted: an upsert of a null vector, added to the index as zeros
    built=(table_of(id=pa.array(["a"]), vector=pa.nulls(1, pa.list_(pa.float32(), 2))), 2)
)
def test_hand_built_vector_batch_decodes_as_the_reference_or_is_refused(
    built: tuple[pa.Table, int],
) -> None:
    table, dim = built
    answer, want = decoded(ipc(table), dim), reference(table, dim)
    if want is None:
        assert isinstance(answer, BadRequest), f"accepted what must be refused: {table}"
        return
    assert isinstance(answer, Batch), f"refused a valid batch: {answer}"
    assert (answer.ids, answer.ops, answer.metadata) == (want.ids, want.ops, want.metadata)
    assert np.array_equal(answer.vectors, want.vectors)


def test_compressed_batches_are_refused_before_decompressing() -> None:
    """Arrow allocates the size a compressed buffer declares, then inflates into it: these
    712 bytes of zstd were 4 MiB of vector (6.7 KB were 200 MB), and a declared 2**62 bytes
    was a MemoryError."""
    zeros = pa.array(np.zeros(2**20, np.float32))
    bomb = table_of(id=pa.array(["a"]), vector=pa.FixedSizeListArray.from_arrays(zeros, 2**20))
    answer = decoded(ipc(bomb, compression="zstd"), 2**20)
    assert isinstance(answer, BadRequest) and "compressed" in str(answer.detail)
    data = bytearray(ipc(table_of(id=pa.array(["a"]), vector=VEC), compression="lz4"))
    body = list(pa.ipc.MessageReader.open_stream(pa.BufferReader(bytes(data))))[1].body
    at = bytes(data).index(body.to_pybytes())  # its first buffer: 8 bytes, it says
    assert data[at : at + 8] == struct.pack("<q", 8)
    data[at : at + 8] = struct.pack("<q", 2**62)
    answer = decoded(bytes(data), 2)
    assert isinstance(answer, BadRequest) and "compressed" in str(answer.detail)


def test_many_null_variable_length_vectors_do_not_allocate_from_the_row_count() -> None:
    """Null list<float> vectors cost 4 bytes each on the wire but dim * 4 bytes decoded."""
    n, dim = 200_000, 8192  # 6.5 GB of zeros from a batch of 4 MB
    ids = pa.array([""] * n)
    table = pa.table(
        {"id": ids, "op": pa.array(["delete"] * n), "vector": pa.nulls(n, pa.list_(pa.float32()))}
    )
    answer = decoded(ipc(table), dim)
    assert isinstance(answer, BadRequest) and "rows" in str(answer.detail)


# ---- Seed corpus: batches that broke the decoder; each must now be refused -------------------

CORPUS = Path(__file__).parent / "fuzz_corpus" / "vector_batches"
BROKE = {  # file (".dim<N>": the index dimension to decode with) -> what it did before
    "segfault-flipped-string-offset.dim2.bin": "one flipped bit in the op column's offsets: "
    "to_pylist read far past the buffer; the vector worker died of SIGSEGV",
    "systemerror-negative-string-offset.dim5.bin": "metadata offsets going backwards: "
    "SystemError (negative size passed to PyUnicode_New)",
    "indexerror-negative-vector-values-length.dim4.bin": "a vector values length of -1: "
    "ArrowIndexError",
    "unicodedecodeerror-id-not-utf8.dim1.bin": "an id not UTF-8 (unchecked without full "
    "validation): UnicodeDecodeError",
    "unicodedecodeerror-column-name-not-utf8.dim4.bin": "a column name not UTF-8: "
    "UnicodeDecodeError, raised by the first fix's validate() itself",
    "jsondecodeerror-metadata.dim4.bin": "metadata not JSON: JSONDecodeError",
    "accepted-op-deleTe-as-upsert.dim5.bin": "op 'deleTe' accepted, then applied as an "
    "upsert of a zero vector",
    "accepted-bytes-after-the-end.dim1.bin": "bytes after the end-of-stream marker ignored",
    "accepted-no-end-of-stream.dim4.bin": "no end-of-stream marker: what a stream cut at a "
    "message boundary looks like",
    "accepted-empty-cut-after-schema.dim2.bin": "cut after the schema message: decoded as an "
    "empty batch, the upsert silently lost",
}


def test_seed_corpus_is_all_listed() -> None:
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(BROKE)


@pytest.mark.parametrize("name", sorted(BROKE))
def test_seed_corpus_vector_batches_are_refused(name: str) -> None:
    dim = int(name.rsplit(".dim", 1)[1].removesuffix(".bin"))
    answer = decoded((CORPUS / name).read_bytes(), dim)
    assert isinstance(answer, BadRequest), f"{name}: {BROKE[name]}"
