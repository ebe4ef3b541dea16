"""Stream a CSV file into a Parquet file in bounded memory, with the ADR-010 type rule.

* The header is read with the stdlib ``csv`` module (strict) and checked. pyarrow's streaming
  reader parses the data in 1 MiB blocks, every column as a string (``newlines_in_values=True``
  makes quoted newlines exact; UTF-8 is checked on pyarrow's threads). Batches are gathered
  into row groups, cast with ``pyarrow.compute``, and encoded on a second thread while the
  next row group is parsed: parse, cast and compression overlap; two row groups in memory.
* Types come from the first ``sample_rows`` rows. When a later value misfits, its column
  becomes ``string`` and the pass restarts from the top of the CSV, so earlier rows keep their
  original text ("1.50" stays "1.50"). Rare; it costs redoing the row groups before it.
* Row groups: at most 122,880 rows (DuckDB's own size, 60 vectors of 2,048; a row group is its
  unit of parallel scan) or 24 MiB of Arrow data, whichever is first. The byte cap bounds
  memory for wide text rows (~290 MiB peak RSS for a 361 MB CSV) and gives DuckDB many groups
  (15 there). Freed memory goes back to the OS once, after the last row group: releasing it
  after each (with 48 MiB groups) cost ~0.3 s of page faults per 500K rows for ~30 MiB less
  peak. Dictionary encoding only for columns with few distinct sampled values.
* Output goes to a temporary file beside ``dst``, renamed into place once complete and its
  footer row count matches the rows read. On any error neither it nor ``dst`` is left; bad
  input raises CsvError, other failures (e.g. writing ``dst``) keep their own exception type.
* Limits (the ingest worker's ``limits.max_csv_columns``, ``limits.max_cell_bytes``): the
  column count is checked on the header; field sizes with one pyarrow kernel per column, and
  only on a parsed block larger than the limit (any other cannot hold such a field).

Decisions: a header without data rows is valid (0 rows, all columns ``string``), with or
without a line end after it; "true"/"false" are matched in ASCII only ("falſe" is text); blank
lines are skipped; a UTF-8 BOM is ignored; a stray quote inside an unquoted field, or text
after a closing quote, is kept as text (as pyarrow does); an unterminated quote is an error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lakehouse.platform.storage.growing import Growing

ARROW_TYPES: dict[str, Any] = dict(
    int64=pa.int64(), float64=pa.float64(), bool=pa.bool_(), string=pa.string()
)
ROW_GROUP_ROWS = 122_880
ROW_GROUP_BYTES = 24 << 20
BLOCK_SIZE = 1 << 20  # pyarrow parse block; a record longer than this triggers a larger retry
MAX_BLOCK_SIZE = 1 << 29
LONG_TEXT = 64  # mean sampled bytes over which a column gets no min/max statistics
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that surrogateescape could not decode
_PATTERNS = {
    "int64": r"^[+-]?[0-9]+$",
    "float64": r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:nan|inf|infinity))$",
    "bool": r"^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$",  # not (?i:): RE2 folds "ſ" to "s"
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of "int64", "float64", "bool", "string"
    nullable: bool  # True when the column holds at least one null


@dataclass(frozen=True)
class Converted:
    columns: list[Column]
    fingerprint: str  # hex SHA-256, see fingerprint()
    rows: int  # data rows written (header excluded)
    size: int  # bytes of the parquet file written at dst
    widened: list[str]  # columns widened to string because of a value after the sample


class CsvError(ValueError):
    """Bad input. str(exc) is a precise message a person can act on, naming the data row
    (1-based, header excluded) and/or column."""


class _Widen(Exception):
    """args[0]: the columns whose values after the sample misfit their type."""


def widest(a: str, b: str) -> str:
    """The narrowest type holding every value of both (ADR-010's order: int64 -> float64 ->
    string, bool -> string; any other pair meets at string)."""
    if a == b:
        return a
    if {a, b} == {"int64", "float64"}:
        return "float64"
    return "string"


def fingerprint(columns: Sequence[tuple[str, str]]) -> str:
    """SHA-256 hex over (name, type) pairs in header order: for each pair
    name.encode() + b"\\x1f" + type.encode() + b"\\x1e", concatenated. Nullability is excluded."""
    digest = hashlib.sha256()
    for name, type_ in columns:
        digest.update(name.encode() + b"\x1f" + type_.encode() + b"\x1e")
    return digest.hexdigest()


def convert(
    src: Path | Growing,
    dst: Path,
    *,
    sample_rows: int = 1000,
    progress: Callable[[int], None] | None = None,
    compression: str = "zstd",
    hints: dict[str, str] | None = None,
    max_columns: int = 0,
    max_cell_bytes: int = 0,
) -> Converted:
    """Stream CSV file src into Parquet file dst in bounded memory.

    ``src`` is a file, or an upload still arriving (:class:`Growing`: read as its parts land).
    Raises CsvError for bad input (and when src cannot be read); ValueError for bad arguments.
    ``progress(rows_so_far)`` is called after each parsed block with a strictly increasing count.
    ``hints`` (column -> type, e.g. an existing dataset's) are the least types of those columns:
    a sampled int column hinted float64 is written as float64; a column empty in the sample
    takes its hint. ``max_columns`` and ``max_cell_bytes`` (0: no limit; the ingest worker
    passes ``limits.max_csv_columns`` and ``limits.max_cell_bytes``) refuse a wider CSV, or a
    field (or column name) of more UTF-8 bytes, with CsvError.
    """
    if sample_rows < 0:
        raise ValueError(f"sample_rows must be >= 0, got {sample_rows}")
    try:
        supported = compression.lower() == "none" or pa.Codec.is_available(compression)
    except ValueError:
        supported = False
    if not supported:
        raise ValueError(f"unsupported parquet compression {compression!r}")
    src = src if isinstance(src, Growing) else Path(src)
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:12]}.tmp")
    reported = 0

    def report(rows: int) -> None:
        nonlocal reported
        if progress is not None and rows > reported:
            reported = rows
            progress(rows)

    try:
        names, header_only = _read_header(src)
        _check_header(names, max_columns, max_cell_bytes)
        source: Any = src  # what pyarrow reads: the file, or a header-only file's bytes
        if header_only:  # pyarrow needs a line end after the header; nothing else to parse
            with _open(src) as f:
                source = pa.py_buffer(f.read() + b"\n")
        types: dict[str, str] = {}
        options: dict[str, Any] = {}  # for the parquet writer
        widened: list[str] = []
        block = BLOCK_SIZE
        while True:
            try:
                if not types:
                    types, few_values, short, empty = _infer(source, names, sample_rows, block)
                    for name, hint in (hints or {}).items():
                        if name in types:
                            types[name] = hint if name in empty else widest(types[name], hint)
                    options = dict(
                        compression=compression,
                        use_dictionary=few_values,
                        write_statistics=short,
                        **({"compression_level": 1} if compression.lower() == "zstd" else {}),
                    )
                nullable, rows, last = _write(
                    source, tmp, types, block, options, report, max_cell_bytes
                )
                break
            except _Widen as exc:
                widened += exc.args[0]
                types.update(dict.fromkeys(exc.args[0], "string"))
            except pa.ArrowInvalid as exc:
                if "straddl" in str(exc) and block < MAX_BLOCK_SIZE:
                    block = min(block * 8, MAX_BLOCK_SIZE)  # a record is longer than a block
                    continue
                raise CsvError(_diagnose(src, names) or f"the CSV is malformed: {exc}") from exc
        if last is not None:
            _check_closed(src, last, rows, names[-1])
        if pq.read_metadata(tmp).num_rows != rows:  # paranoia: the footer must agree
            raise RuntimeError(f"csv2parquet wrote a row count other than the {rows} read")
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
        raise
    columns = [Column(n, t, nl) for (n, t), nl in zip(types.items(), nullable, strict=True)]
    digest = fingerprint([(c.name, c.type) for c in columns])
    widened = [n for n in names if n in widened]  # header order, whatever the detection order
    return Converted(columns, digest, rows, dst.stat().st_size, widened)


def _open(src: Path | Growing) -> BinaryIO:
    return cast(BinaryIO, src.open()) if isinstance(src, Growing) else open(src, "rb")


def _text(src: Path | Growing) -> TextIO:
    """``src`` as text; surrogateescape: a bad byte must not fail the read itself."""
    return io.TextIOWrapper(_open(src), encoding="utf-8-sig", errors="surrogateescape", newline="")


def _size(src: Path | Growing) -> int:
    return src.size() if isinstance(src, Growing) else src.stat().st_size


def _read_header(src: Path | Growing) -> tuple[list[str], bool]:
    """The column names, and whether nothing but line ends follows them."""
    try:  # surrogateescape: a bad byte after the header must not fail the header read
        with _text(src) as f:
            names = next((row for row in csv.reader(f, strict=True) if row), None)
            rest = "\n"
            while rest and not rest.strip("\r\n"):  # the reader stopped just past the header
                rest = f.read(1 << 16)
    except csv.Error as exc:
        raise CsvError(f"the header row could not be parsed ({exc}); is a quote open?") from exc
    except OSError as exc:
        raise CsvError(f"cannot read {src}: {exc.strerror or exc}") from exc
    if names is None:
        raise CsvError("the file is empty" + (" (only blank lines)" if _size(src) else ""))
    seen: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if _UNDECODABLE.search(name):
            raise CsvError(f"the header row is not valid UTF-8 (column {i})")
        if not name:
            raise CsvError(f"column {i} has an empty name")
        if name in seen:
            raise CsvError(f"column {name!r} appears twice (columns {seen[name]} and {i})")
        seen[name] = i
    return names, not rest


def _check_header(names: list[str], max_columns: int, max_cell_bytes: int) -> None:
    if max_columns and len(names) > max_columns:
        raise CsvError(
            f"CSV has {len(names)} columns; the limit is {max_columns} (limits.max_csv_columns)"
        )
    for i, name in enumerate(names, 1):
        if max_cell_bytes and len(name.encode()) > max_cell_bytes:
            raise CsvError(
                f"the header's column {i} name is {len(name.encode())} bytes; the limit is "
                f"{max_cell_bytes} (limits.max_cell_bytes)"
            )


def _check_cells(batch: Any, rows: int, limit: int) -> None:
    """Refuse a field of more than ``limit`` bytes; ``rows``: data rows before the batch.
    Free for nearly every batch: one no larger than the limit cannot hold such a field."""
    if not limit or batch.nbytes <= limit:
        return
    over = []  # (row in batch, column, bytes) of each column's first field over the limit
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if column.nbytes > limit:
            lengths = pc.binary_length(column)
            at = pc.index(pc.greater(lengths, limit), True).as_py()
            if at >= 0:
                over.append((at, name, lengths[at].as_py()))
    if over:
        at, name, size = min(over, key=lambda o: o[0])  # the first row; in it, the first column
        raise CsvError(
            f"data row {rows + at + 1}, column {name!r}, has a field of {size} bytes; the "
            f"limit is {limit} (limits.max_cell_bytes)"
        )


def _batches(src: Any, names: list[str], block: int) -> Iterator[Any]:
    """Record batches, every column a string (UTF-8 checked by pyarrow); empty cells are null.
    ``src`` is the CSV's path, an upload still arriving, or its bytes (a pyarrow Buffer) when
    it is only a header."""
    if isinstance(src, Growing):
        with src.open() as f:
            yield from _batches(f, names, block)
        return
    reader = pacsv.open_csv(
        pa.BufferReader(src) if isinstance(src, pa.Buffer) else src,
        read_options=pacsv.ReadOptions(block_size=block, use_threads=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    if reader.schema.names != names:  # pyarrow read the header differently from csv: refuse
        raise CsvError(f"the header row is ambiguous: read as {reader.schema.names}")
    yield from reader


def _typed(text: Any, type_: str) -> Any | None:
    """The string (chunked) array converted to type_, or None when a value does not fit."""
    if type_ == "string":
        return text.fill_null("") if text.null_count else text
    if text.null_count == len(text):
        return pa.nulls(len(text), ARROW_TYPES[type_])
    if not pc.all(pc.match_substring_regex(text, _PATTERNS[type_])).as_py():
        return None
    if type_ == "bool":
        return pc.equal(pc.ascii_lower(text), "true")
    if type_ == "int64" and pc.any(pc.starts_with(text, "+")).as_py():
        text = pc.utf8_ltrim(text, characters="+")  # Arrow's integer parser refuses "+5"
    try:
        return text.cast(ARROW_TYPES[type_])
    except pa.ArrowInvalid:  # matched the pattern but out of int64 range
        return None


def _infer(
    src: Any, names: list[str], sample_rows: int, block: int
) -> tuple[dict[str, str], list[str], list[str], set[str]]:
    """Column types from the sample, the columns worth dictionary encoding (at most one
    distinct value per two sampled ones: the others would only pay for a failed attempt),
    the columns worth min/max statistics (sampled values of at most ``LONG_TEXT`` bytes on
    average: free text never prunes a row group, and its statistics cost ~18% of encoding),
    and the columns the sample has no value in."""
    head, rows = [], 0
    for batch in _batches(src, names, block):
        if rows >= sample_rows:
            break
        head.append(batch)
        rows += batch.num_rows
    schema = pa.schema([(n, pa.string()) for n in names])
    sample = pa.Table.from_batches(head, schema=schema).slice(0, sample_rows)
    types, few_values, short, empty = {}, [], [], set()
    for name, text in zip(names, sample.columns, strict=True):
        if text.null_count == len(text):
            empty.add(name)
        if (pc.mean(pc.binary_length(text)).as_py() or 0) <= LONG_TEXT:
            short.append(name)
        fits = (t for t in ("int64", "float64", "bool") if _typed(text, t) is not None)
        types[name] = "string" if text.null_count == len(text) else next(fits, "string")
        if 2 * pc.count_distinct(text).as_py() <= len(text) - text.null_count:
            few_values.append(name)
    return types, few_values, short, empty


def _convert(table: Any, types: list[str], schema: Any, nullable: list[bool]) -> Any:
    """One row group of strings to its column types; _Widen names the columns that misfit."""
    columns, misfits = [], []
    for i, (text, type_) in enumerate(zip(table.columns, types, strict=True)):
        out = _typed(text, type_)
        if out is None:
            misfits.append(schema.names[i])
        else:
            nullable[i] = nullable[i] or out.null_count > 0
            columns.append(out)
    if misfits:
        raise _Widen(misfits)
    return pa.Table.from_arrays(columns, schema=schema)


def _write(
    src: Any,
    tmp: Path,
    column_types: dict[str, str],
    block: int,
    options: dict[str, Any],
    report: Callable[[int], None],
    max_cell_bytes: int = 0,
) -> tuple[list[bool], int, bytes | None]:
    """One pass over the CSV into tmp; returns nullability, row count and the last raw value.
    Row group N is encoded on a second thread while row group N+1 is parsed and cast."""
    names, types = list(column_types), list(column_types.values())
    schema = pa.schema([(n, ARROW_TYPES[t]) for n, t in column_types.items()])
    text_schema = pa.schema([(n, pa.string()) for n in names])
    nullable = [False] * len(names)
    rows, last, pending, pending_rows, pending_bytes = 0, None, [], 0, 0
    writer = pq.ParquetWriter(tmp, schema, **options)
    pool = ThreadPoolExecutor(1, thread_name_prefix="csv2parquet")
    job: Future[None] | None = None

    def flush(text: Any) -> None:
        nonlocal job
        table = _convert(text, types, schema, nullable)
        if job is not None:
            job.result()
        job = pool.submit(writer.write_table, table, table.num_rows)

    try:
        for batch in _batches(src, names, block):
            if not batch.num_rows:
                continue
            _check_cells(batch, rows, max_cell_bytes)
            pending.append(batch)
            pending_rows += batch.num_rows
            pending_bytes += batch.nbytes
            rows += batch.num_rows
            last = batch.column(len(names) - 1)[-1].as_py() or ""
            report(rows)
            while pending_rows >= ROW_GROUP_ROWS or pending_bytes >= ROW_GROUP_BYTES:
                table = pa.Table.from_batches(pending, schema=text_schema)
                pending = table[ROW_GROUP_ROWS:].to_batches()
                pending_rows = max(pending_rows - ROW_GROUP_ROWS, 0)
                pending_bytes = sum(b.nbytes for b in pending)
                flush(table[:ROW_GROUP_ROWS])
                del table
        if pending:
            flush(pa.Table.from_batches(pending, schema=text_schema))
        if job is not None:
            job.result()
    finally:
        pool.shutdown()  # waits for a running encode, whose error (if any) was already raised
        writer.close()
        pa.default_memory_pool().release_unused()  # an idle worker keeps none of it
    return nullable, rows, None if last is None else last.encode()


def _check_closed(src: Path | Growing, last: bytes, rows: int, column: str) -> None:
    """pyarrow accepts an unterminated quote at end of file (the rest of the file becomes one
    value of the last row). Catch it: the file then ends with '"' + the value, quotes doubled,
    and the opening quote starts a field."""
    tail = b'"' + last.replace(b'"', b'""')
    at = _size(src) - len(tail)  # where the opening quote would be
    if at < 1:
        return
    with _open(src) as f:
        f.seek(at - 1)
        if f.read(1) not in (b",", b"\n", b"\r") or f.read() != tail:
            return
        f.seek(0)
        line = 1 + sum(f.read(min(1 << 24, at - n)).count(b"\n") for n in range(0, at, 1 << 24))
    raise CsvError(
        f"data row {rows} has an unterminated quoted field in column {column!r} (the quote opens "
        f"on line {line}, byte offset {at}); everything after it would be one value"
    )


def _diagnose(src: Path | Growing, names: list[str]) -> str | None:
    """Slow, exact pass with the stdlib csv module, run only after pyarrow rejected the file:
    find the first row with the wrong number of fields or with invalid UTF-8."""
    old_limit = csv.field_size_limit(1 << 30)
    count, line, ncols = 0, 0, len(names)  # count: data rows so far
    try:
        with _text(src) as f:
            reader = csv.reader(f)
            next(row for row in reader if row)  # the header
            line = reader.line_num
            for row in reader:
                start, line = line + 1, reader.line_num
                if not row:
                    continue
                count += 1
                where = f"line {start}" if start == line else f"lines {start}-{line}"
                if len(row) != ncols:
                    fields = f"{len(row)} field{'s' * (len(row) != 1)}"
                    hint = ""
                    if start != line and next(reader, None) is None:
                        hint = "; it runs to the end of the file: is a quote left open?"
                    return f"data row {count} ({where}) has {fields}; the header has {ncols}{hint}"
                bad = [n for n, value in zip(names, row, strict=True) if _UNDECODABLE.search(value)]
                if bad:
                    return f"data row {count} ({where}) is not valid UTF-8 (column {bad[0]!r})"
    except csv.Error as exc:
        return f"data row {count + 1} (near line {line + 1}) could not be parsed: {exc}"
    finally:
        csv.field_size_limit(old_limit)
    return None
