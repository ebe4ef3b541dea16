"""CSV -> Parquet conversion: ADR-010 inference, widening, RFC 4180 parsing, errors, scale."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import random
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from lakehouse.tables import csv2parquet
from lakehouse.tables.csv2parquet import Column, Converted, CsvError, convert, fingerprint


def run(tmp_path: Path, data: str | bytes, **kw: Any) -> tuple[Converted, dict[str, list[Any]]]:
    src, dst = tmp_path / "in.csv", tmp_path / "out.parquet"
    src.write_bytes(data.encode() if isinstance(data, str) else data)
    result = convert(src, dst, **kw)
    assert result.size == dst.stat().st_size
    table = pq.read_table(dst)
    assert table.num_rows == result.rows
    return result, table.to_pydict()


def types_of(result: Converted) -> dict[str, str]:
    return {c.name: c.type for c in result.columns}


def test_infers_each_type(tmp_path: Path) -> None:
    data = (
        "i,f,b,s,big,sp,hexa\n"
        "1,1.5,true,x,99999999999999999999,5,0x1F\n"
        "-2,1e3,false,y,1, 5,1\n"
        "+3,-inf,true,007,2,5 ,2\n"
        "007,nan,false,z,3,6,3\n"
        "9223372036854775807,.5,true,w,4,7,4\n"
    )
    result, rows = run(tmp_path, data)
    assert types_of(result) == {
        "i": "int64",
        "f": "float64",
        "b": "bool",
        "s": "string",
        "big": "float64",  # out of int64 range, still a float
        "sp": "string",  # " 5" and "5 " are not trimmed
        "hexa": "string",  # Arrow would parse 0x1F; the rule does not
    }
    assert rows["i"] == [1, -2, 3, 7, 2**63 - 1]
    assert rows["f"][:3] == [1.5, 1000.0, -math.inf] and math.isnan(rows["f"][3])
    assert rows["b"] == [True, False, True, False, True]
    assert rows["s"] == ["x", "y", "007", "z", "w"]
    assert rows["sp"] == ["5", " 5", "5 ", "6", "7"]
    schema = pq.read_schema(tmp_path / "out.parquet")
    assert [str(t) for t in schema.types] == [
        "int64",
        "double",
        "bool",
        "string",
        "double",
        "string",
        "string",
    ]


def test_mixed_case_bools_but_not_digits(tmp_path: Path) -> None:
    data = "a,b,c\nTRUE,true,1\nFalse,1,0\ntRuE,false,1\n"
    result, rows = run(tmp_path, data)
    assert types_of(result) == {"a": "bool", "b": "string", "c": "int64"}
    assert rows["a"] == [True, False, True]
    assert rows["b"] == ["true", "1", "false"]


def test_empty_cells_and_nullable(tmp_path: Path) -> None:
    data = 'i,f,b,s,e,full\n1,,true,,,x\n,2.5,,"",,y\n3,3.5,false,z,"",z\n'
    result, rows = run(tmp_path, data)
    assert result.columns == [
        Column("i", "int64", True),
        Column("f", "float64", True),
        Column("b", "bool", True),
        Column("s", "string", False),  # empty string cells are "", never null
        Column("e", "string", False),  # all empty: string
        Column("full", "string", False),
    ]
    assert rows["i"] == [1, None, 3]
    assert rows["f"] == [None, 2.5, 3.5]
    assert rows["b"] == [True, None, False]
    assert rows["s"] == ["", "", "z"]
    assert rows["e"] == ["", "", ""]


def test_quoting_multiline_and_escapes(tmp_path: Path) -> None:
    data = (
        "id,skills,resume\n"
        '1,"welding,CNC","line one\nline two, with comma\n\nand ""quotes"""\n'
        '2,"",plain\n'
        '3,"a ""b"" c","x\ny"\n'
    )
    result, rows = run(tmp_path, data)
    assert result.rows == 3
    assert rows["id"] == [1, 2, 3]
    assert rows["skills"] == ["welding,CNC", "", 'a "b" c']
    assert rows["resume"] == ['line one\nline two, with comma\n\nand "quotes"', "plain", "x\ny"]


def test_crlf_bom_and_blank_lines(tmp_path: Path) -> None:
    data = b'\xef\xbb\xbfa,b\r\n1,"x\r\ny"\r\n\r\n2,z\r\n'
    result, rows = run(tmp_path, data)
    assert types_of(result) == {"a": "int64", "b": "string"}
    assert rows == {"a": [1, 2], "b": ["x\r\ny", "z"]}  # quoted CRLF kept as-is


def test_header_only_and_sample_rows(tmp_path: Path) -> None:
    result, rows = run(tmp_path, "a,b\n")
    assert (result.rows, types_of(result), rows) == (
        0,
        {"a": "string", "b": "string"},
        {"a": [], "b": []},
    )
    result, _ = run(tmp_path, "a\n1\n2\n", sample_rows=0)  # no sample: everything is text
    assert types_of(result) == {"a": "string"}
    result, _ = run(tmp_path, "a\n1\n2\n", sample_rows=10**6)
    assert types_of(result) == {"a": "int64"}


def test_widening_after_sample_keeps_original_text(tmp_path: Path) -> None:
    lines = ["i,f,b,keep"]
    for n in range(12):
        lines.append(f"{'+' if n == 0 else ''}{n},{'' if n == 1 else f'{n}.50'},TRUE,{n}")
    lines[9] = "8,N/A,1,8"  # data row 9: after the 5-row sample, misfits f and b
    lines[11] = "1e3,10.50,False,10"  # data row 11: i misfits too
    result, rows = run(tmp_path, "\n".join(lines) + "\n", sample_rows=5)
    assert types_of(result) == {"i": "string", "f": "string", "b": "string", "keep": "int64"}
    assert result.widened == ["i", "f", "b"]  # header order
    assert rows["f"][:4] == ["0.50", "", "2.50", "3.50"]  # original text; sample null -> ""
    assert rows["f"][8:11] == ["N/A", "9.50", "10.50"]
    assert rows["i"][:2] == ["+0", "1"] and rows["i"][10] == "1e3"
    assert rows["b"][:2] == ["TRUE", "TRUE"] and rows["b"][8] == "1"
    assert rows["keep"] == list(range(12))
    assert all(not c.nullable for c in result.columns)


def test_row_groups_and_two_widenings_in_different_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv2parquet, "ROW_GROUP_ROWS", 1000)
    passes: list[dict[str, str]] = []
    write = csv2parquet._write

    def spy(*args: Any) -> Any:
        passes.append(dict(args[2]))
        return write(*args)

    monkeypatch.setattr(csv2parquet, "_write", spy)
    lines = ["n,a,b"] + [f"{i},{i},{i / 4}" for i in range(5500)]
    lines[1501] = "1500,x1500,375.00"  # a misfits in the 2nd row group, b keeps "375.00"
    lines[4001] = "4000,4000,1000.0 "  # b misfits in the 5th
    result, rows = run(tmp_path, "\n".join(lines) + "\n")
    assert result.widened == ["a", "b"] and types_of(result)["n"] == "int64"
    assert [list(p.values()) for p in passes] == [  # one restart per widening event
        ["int64", "int64", "float64"],
        ["int64", "string", "float64"],
        ["int64", "string", "string"],
    ]
    meta = pq.read_metadata(tmp_path / "out.parquet")
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000] * 5 + [500]
    assert rows["a"][1499:1502] == ["1499", "x1500", "1501"]
    assert rows["b"][1500] == "375.00" and rows["b"][4000] == "1000.0 " and rows["b"][1] == "0.25"


def test_fingerprint() -> None:
    pairs = [("id", "int64"), ("name", "string")]
    expected = hashlib.sha256(b"id\x1fint64\x1ename\x1fstring\x1e").hexdigest()
    assert fingerprint(pairs) == expected
    assert expected == "916f5f59b41fe1bf3785e0e9d2fd6d6233b0a6bfb86da6241549582922a923a4"
    assert fingerprint(pairs) == fingerprint(list(pairs))
    assert fingerprint(pairs[::-1]) != expected  # order matters
    assert fingerprint([("id", "string"), ("name", "string")]) != expected


def test_fingerprint_ignores_nullability(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full, _ = run(tmp_path / "a", "id,name\n1,x\n2,y\n")
    holes, _ = run(tmp_path / "b", "id,name\n1,x\n,y\n")
    assert [c.nullable for c in full.columns] != [c.nullable for c in holes.columns]
    assert (
        full.fingerprint == holes.fingerprint == fingerprint([("id", "int64"), ("name", "string")])
    )


ERROR_CASES = [
    (b"", "the file is empty"),
    (b"\n\r\n", "the file is empty"),
    (b"a,,c\n1,2,3\n", "column 2 has an empty name"),
    (b"x,y,z,w,x\n1,2,3,4,5\n", "column 'x' appears twice (columns 1 and 5)"),
    (b'a,b\n1,2\n3,"x\ny"\n4,5,6\n', "data row 3 (line 5) has 3 fields; the header has 2"),
    (b"a,b\n1,2\n3\n", "data row 2 (line 3) has 1 field; the header has 2"),
    (b"a,b\n1,2\n3,\xff\n", "data row 2 (line 3) is not valid UTF-8 (column 'b')"),
    (b"a,\xffb\n1,2\n", "the header row is not valid UTF-8 (column 2)"),
    (b'a,b\n1,2\n3,"x\n4,5\n', "data row 2 has an unterminated quoted field in column 'b'"),
    (b'a,b\n1,2\n3,"\n', "data row 2 has an unterminated quoted field in column 'b'"),
    (b'a,b\n1,2\n"3,x\n4,5\n', "data row 2 (lines 3-4) has 1 field; the header has 2; it"),
    (b'a,"b\n1,2\n', "the header row could not be parsed"),
]


@pytest.mark.parametrize(("data", "message"), ERROR_CASES)
def test_errors_name_the_row_or_column_and_leave_nothing(
    tmp_path: Path, data: bytes, message: str
) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out.parquet"
    src.write_bytes(data)
    dst.write_bytes(b"stale")  # an old output must not survive as if it were this one
    with pytest.raises(CsvError) as info:
        convert(src, dst)
    assert message in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_error_late_in_a_large_file(tmp_path: Path) -> None:
    body = "".join(f'{n},"text\n{n}"\n' for n in range(1, 30_001))
    src, dst = tmp_path / "in.csv", tmp_path / "out.parquet"
    src.write_text("a,b\n" + body + "30001,x,extra\n")
    with pytest.raises(CsvError, match=r"^data row 30001 \(line 60002\) has 3 fields"):
        convert(src, dst)
    assert not dst.exists()


def test_bad_arguments_and_missing_source(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a\n1\n")
    for codec in ("nope", "uncompressed"):
        with pytest.raises(ValueError, match="compression"):
            convert(src, tmp_path / "o.parquet", compression=codec)
    with pytest.raises(ValueError, match="sample_rows"):
        convert(src, tmp_path / "o.parquet", sample_rows=-1)
    with pytest.raises(CsvError, match="cannot read"):
        convert(tmp_path / "missing.csv", tmp_path / "o.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_snappy_and_a_record_longer_than_a_block(tmp_path: Path) -> None:
    huge = "y" * (csv2parquet.BLOCK_SIZE * 3)
    _, rows = run(tmp_path, f'a,b\n1,"{huge}"\n2,z\n', compression="snappy")
    assert rows == {"a": [1, 2], "b": [huge, "z"]}
    meta = pq.read_metadata(tmp_path / "out.parquet")
    assert meta.row_group(0).column(1).compression == "SNAPPY"


def generate(path: Path, n: int, late_misfit: int) -> list[list[str]]:
    """n rows like the production feed, some multi-line; 'years' gets 'N/A' at late_misfit."""
    rnd = random.Random(7)
    buf = io.StringIO()
    writer = csv.writer(buf)  # CRLF records, minimal quoting
    writer.writerow(["id", "name", "years", "rate", "ok", "notes"])
    rows = []
    for i in range(1, n + 1):
        notes = rnd.choice(["", "short", 'multi\nline, "quoted"', "a,b\r\nc"])
        years = "N/A" if i == late_misfit else ("" if i % 97 == 0 else str(rnd.randint(0, 40)))
        row = [str(i), f"name {i}", years, f"{rnd.uniform(10, 90):.2f}", "TRUE", notes]
        writer.writerow(row)
        rows.append(row)
    path.write_text(buf.getvalue(), newline="")
    return rows


def test_large_file_batches_row_groups_progress_and_late_widening(tmp_path: Path) -> None:
    n = 200_000
    src, dst = tmp_path / "big.csv", tmp_path / "big.parquet"
    expected = generate(src, n, late_misfit=190_000)
    seen: list[int] = []
    result = convert(src, dst, progress=seen.append)
    assert result.rows == n
    assert result.widened == ["years"]
    assert types_of(result) == {
        "id": "int64",
        "name": "string",
        "years": "string",
        "rate": "float64",
        "ok": "bool",
        "notes": "string",
    }
    assert len(seen) > 5 and seen == sorted(set(seen)) and seen[-1] == n
    meta = pq.read_metadata(dst)
    assert meta.num_rows == n and meta.num_row_groups >= 2
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert max(groups) <= csv2parquet.ROW_GROUP_ROWS and groups[0] == csv2parquet.ROW_GROUP_ROWS
    table = pq.read_table(dst, columns=["id", "years", "notes"]).to_pydict()
    assert table["id"] == list(range(1, n + 1))
    assert table["years"] == [r[2] for r in expected]  # original text, "" for empty cells
    assert table["notes"] == [r[5] for r in expected]
    sql = f"SELECT count(*), count(DISTINCT id) FROM '{dst}'"
    count = duckdb.connect().execute(sql).fetchone()
    assert count == (n, n)
