"""Converting an upload while it arrives: :class:`Growing` read as one file, part by part."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lakehouse.platform.storage.growing import Growing
from lakehouse.tables.csv2parquet import CsvError, convert
from tests.test_csv2parquet import ERROR_CASES


def split(tmp: Path, data: bytes, sizes: list[int]) -> list[Path]:
    """``data`` cut into part files of the given sizes, cycling (a 0 is an empty part)."""
    parts, at, i = [], 0, 0
    while at < len(data) or not parts:
        size = sizes[i % len(sizes)]
        path = tmp / f"part{i:06d}"
        path.write_bytes(data[at : at + size])
        parts.append(path)
        at, i = at + size, i + 1
    return parts


def arrived(tmp: Path, data: bytes, sizes: list[int]) -> Growing:
    growing = Growing()
    for path in split(tmp, data, sizes):
        growing.add(path)
    growing.finish()
    return growing


def test_reader_reads_parts_as_one_file_and_seeks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    growing = arrived(tmp_path, data, [1, 0, 7, 1000, 3])
    with growing.open() as f:
        assert f.read() == data
        f.seek(-5, 2)
        assert f.read() == data[-5:]
        f.seek(1003)
        assert f.read(10) == data[1003:1013]  # across the part that ends at 1008
    with growing.open() as f:
        got = bytearray()
        while chunk := f.read(333):
            got += chunk
        assert bytes(got) == data
    assert growing.size() == len(data)


def test_conversion_of_parts_equals_the_file_with_widening(tmp_path: Path) -> None:
    lines = ["n,a,note"] + [f'{i},{i},"line\n{i}, quoted"' for i in range(3000)]
    lines[2001] = '2000,x2000,"late misfit in a"'  # after the sample: a restart from the top
    data = ("\n".join(lines) + "\n").encode()
    whole = tmp_path / "in.csv"
    whole.write_bytes(data)
    (tmp_path / "parts").mkdir()
    growing = arrived(tmp_path / "parts", data, [4096, 1, 65536, 17])
    by_file = convert(whole, tmp_path / "file.parquet", sample_rows=100)
    by_parts = convert(growing, tmp_path / "parts.parquet", sample_rows=100)
    assert by_parts == by_file.__class__(**{**vars(by_file), "size": by_parts.size})
    assert by_parts.widened == ["a"]
    assert pq.read_table(tmp_path / "parts.parquet") == pq.read_table(tmp_path / "file.parquet")


def test_conversion_runs_before_the_upload_ends(tmp_path: Path) -> None:
    """Rows are converted while parts are still missing: progress is reported before the
    rest arrives (this would time out if the converter waited for the whole upload)."""
    data = b"id,text\n" + b"".join(b'%d,"text %d"\n' % (i, i) for i in range(400_000))
    parts = split(tmp_path, data, [1 << 20])
    half = len(parts) // 2
    growing = Growing()
    for path in parts[:half]:
        growing.add(path)
    early = threading.Event()
    seen: list[int] = []

    def progress(rows: int) -> None:
        seen.append(rows)
        early.set()

    result: list[object] = []
    worker = threading.Thread(
        target=lambda: result.append(convert(growing, tmp_path / "out.parquet", progress=progress))
    )
    worker.start()
    assert early.wait(60), "no rows converted from the parts that had arrived"
    assert not result  # still waiting for the rest
    for path in parts[half:]:
        growing.add(path)
    growing.finish()
    worker.join(60)
    assert result and result[0].rows == 400_000  # type: ignore[attr-defined]
    assert seen[0] < 400_000


def test_a_failed_upload_fails_the_conversion_and_leaves_nothing(tmp_path: Path) -> None:
    growing = Growing()
    (tmp_path / "p0").write_bytes(b"a,b\n1,2\n3,")
    growing.add(tmp_path / "p0")
    growing.fail(CsvError("the upload was cut off"))
    with pytest.raises(CsvError, match="cut off"):
        convert(growing, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize(("data", "message"), ERROR_CASES)
def test_bad_csv_messages_are_the_same_from_parts(
    tmp_path: Path, data: bytes, message: str
) -> None:
    growing = arrived(tmp_path, data, [3, 1])
    with pytest.raises(CsvError) as info:
        convert(growing, tmp_path / "out.parquet")
    assert message in str(info.value)
    assert not (tmp_path / "out.parquet").exists()
