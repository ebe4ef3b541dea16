"""A dataset's rows by id, and what a search hit shows of its row.

- :class:`RowTable`: one dataset in memory (an Arrow table) with an id → position map, built
  by the query worker on the first lookup and dropped when the dataset changes, so a search
  answer's k rows cost a dictionary lookup and a ``take`` instead of a Parquet scan (~100 ms
  for 100K rows with resumes).
- :func:`terms` / :func:`snippet`: the query's words found in a row, and a window of its long
  text with those words marked, so a page can highlight why a row matched.
- :func:`render`: a row through an auto-embed text template (the text that was embedded).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakehouse.platform import lazy
from lakehouse.tables.sqljson import table_rows

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
else:
    pa = lazy.module("pyarrow")
    pc = lazy.module("pyarrow.compute")
    pq = lazy.module("pyarrow.parquet")

LONG_MEAN = 150
"""A string column whose values average more than this many characters is long text: left out of
a hit's row by default and used for its snippet."""
SNIPPET_CHARS = 240
STOP = frozenset(
    "a an and any are as at be by for from in into is it near of on or the to with who "
    "worker workers".split()
)


@dataclass
class RowTable:
    """One dataset's rows, addressable by the string form of an id column."""

    table: pa.Table
    types: list[str]  # DuckDB type per column (for exact JSON)
    id_column: str
    positions: dict[str, int] = field(repr=False)
    long: list[str]  # long text columns

    @classmethod
    def build(cls, table: pa.Table, types: list[str], id_column: str) -> RowTable:
        if id_column not in table.column_names:
            raise KeyError(id_column)
        table = table.combine_chunks()
        ids = pc.cast(table[id_column], pa.string()).to_pylist()
        positions = {v: i for i, v in enumerate(ids) if v is not None}
        long = [
            name
            for name, col in zip(table.column_names, table.columns, strict=True)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            if len(col) and (pc.mean(pc.utf8_length(col)).as_py() or 0) > LONG_MEAN
        ]
        return cls(table, types, id_column, positions, long)

    def follow(self, added: list[str], delete_sets: list[str]) -> RowTable:
        """These rows after an upsert: without the keys in ``delete_sets``, with the rows of
        the ``added`` data objects (Parquet files with the same columns). Nothing is copied:
        the new rows are appended as a chunk and a deleted key's row is only unlisted (it is
        dropped at the next full load, e.g. after a compaction)."""
        positions = dict(self.positions)
        for path in delete_sets:
            for key in pq.read_table(path, columns=["key"])["key"].to_pylist():
                positions.pop(key, None)
        table = self.table
        if added:
            new = pq.read_table(added).select(table.column_names).cast(table.schema)
            ids = pc.cast(new[self.id_column], pa.string()).to_pylist()
            start = table.num_rows
            positions.update((v, start + i) for i, v in enumerate(ids) if v is not None)
            table = pa.concat_tables([table, new])
        return RowTable(table, self.types, self.id_column, positions, self.long)

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes) + 100 * len(self.positions)

    def lookup(self, ids: list[str]) -> dict[str, list[Any]]:
        """JSON-ready rows of the ids that exist, by id."""
        found = [(i, self.positions[i]) for i in dict.fromkeys(ids) if i in self.positions]
        if not found:
            return {}
        rows = table_rows(self.table.take([p for _, p in found]), self.types)
        return {i: row for (i, _), row in zip(found, rows, strict=True)}


def terms(text: str) -> list[str]:
    """The words of a query worth marking in a row: lower case, no stop words, in order."""
    words = re.findall(r"[\w][\w+#./-]*[\w+#]|\w", text.lower())
    return list(dict.fromkeys(w for w in words if len(w) > 1 and w not in STOP))


def _at_word(text: str, word: str) -> list[int]:
    """Where ``word`` (lower case) starts a word of ``text`` (lower case): as a prefix from 4
    characters on ("forklift" finds "forklifts"), as a whole word below ("st" does not find
    "staging"). Plain ``str.find``: a regex with look-arounds costs ~10× more per row."""
    out, i, n, whole = [], text.find(word), len(word), len(word) < 4
    while i >= 0:
        before = text[i - 1] if i else " "
        after = text[i + n] if i + n < len(text) else " "
        if not (before.isalnum() or before == "_") and not (
            whole and (after.isalnum() or after == "_")
        ):
            out.append(i)
        i = text.find(word, i + 1)
    return out


def found_terms(row: dict[str, Any], words: list[str]) -> list[str]:
    """Those of ``words`` that occur (any case) in the row's text values."""
    text = " ".join(v for v in row.values() if isinstance(v, str)).lower()
    return [w for w in words if w in text and _at_word(text, w)]


def _marks(text: str, words: list[str]) -> list[list[int]]:
    lower = text.lower()
    spans = sorted([i, i + len(w)] for w in words if w in lower for i in _at_word(lower, w))
    out: list[list[int]] = []
    for span in spans:  # overlapping words ("osha", "osha-30") become one mark
        if out and span[0] < out[-1][1]:
            out[-1][1] = max(out[-1][1], span[1])
        else:
            out.append(span)
    return out


def snippet(row: dict[str, Any], columns: list[str], words: list[str]) -> dict[str, Any] | None:
    """``{"column", "text", "marks": [[start, end], ...]}``: about SNIPPET_CHARS of the
    long-text column with the most query words, around the first one; ``marks`` are the
    offsets of every query word inside ``text``. None when the row has no such text."""
    texts = [(c, row[c]) for c in columns if isinstance(row.get(c), str) and row[c]]
    if not texts:
        return None
    best, best_marks = texts[0], list[list[int]]()
    for column, text in texts if words else ():
        marks = _marks(text, words)
        if len(marks) > len(best_marks):
            best, best_marks = (column, text), marks
    column, text = best
    start = 0
    if best_marks and best_marks[0][0] > SNIPPET_CHARS // 3:
        start = text.rfind(" ", 0, best_marks[0][0] - SNIPPET_CHARS // 4) + 1
    end = min(len(text), start + SNIPPET_CHARS)
    if end < len(text):
        cut = text.rfind(" ", start, end)
        end = cut if cut > start else end
    window = ("…" if start > 0 else "") + " ".join(text[start:end].split())
    window += "…" if end < len(text) else ""
    return {"column": column, "text": window, "marks": _marks(window, words)}


def render(template: str, row: dict[str, Any]) -> str:
    """An auto-embed text: ``template`` (a format string over the columns) over ``row``."""
    return template.format_map({k: "" if v is None else v for k, v in row.items()})


def rendered(parquet: Path, template: str, id_column: str) -> Iterator[tuple[str, str]]:
    """``(id, text)`` of every row of a Parquet file, in file order: its auto-embed texts."""
    for batch in pq.ParquetFile(parquet).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield str(row[id_column]), render(template, row)
