"""Rows by id and what a search hit shows of its row (fast: no servers)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse.tables.rows import RowTable, found_terms, render, snippet, terms

RESUME = (
    "Material handler with 10 years in manufacturing plants around Flint, MI, looking for "
    "full-time work. Comfortable with mandatory overtime and weekend work. Certified forklift "
    "operator (sit-down and reach truck) with OSHA-30; staging, cycle counts and RF scanners."
)


def table() -> RowTable:
    t = pa.table(
        {
            "worker_id": pa.array([7, 8, 9], pa.int64()),
            "name": ["Ann", "Bo", None],
            "rate": [18.5, None, 21.0],
            "resume_text": [RESUME, "short", RESUME],
        }
    )
    return RowTable.build(t, ["BIGINT", "VARCHAR", "DOUBLE", "VARCHAR"], "worker_id")


def test_rows_by_the_string_form_of_the_id() -> None:
    rt = table()
    got = rt.lookup(["9", "7", "404", "7"])
    assert list(got) == ["9", "7"]  # in the order asked, each once, unknown ids left out
    assert got["7"] == [7, "Ann", 18.5, RESUME]
    assert got["9"][1] is None
    assert rt.long == ["resume_text"]  # long text: averages over 150 characters
    assert rt.lookup([]) == {}


def test_rows_follow_an_upsert_without_reading_the_old_rows_again(tmp_path: Path) -> None:
    rt = table()
    added = pa.table(
        {
            "worker_id": pa.array([8, 10], pa.int64()),
            "name": ["Bob", "Cy"],
            "rate": [19.0, None],
            "resume_text": ["short", "new"],
        }
    )
    pq.write_table(added, tmp_path / "data.parquet")
    pq.write_table(pa.table({"key": ["8", "9"]}), tmp_path / "deletes.parquet")
    after = rt.follow([str(tmp_path / "data.parquet")], [str(tmp_path / "deletes.parquet")])
    got = after.lookup(["7", "8", "9", "10"])
    assert list(got) == ["7", "8", "10"]  # 9 deleted, 8 replaced, 10 added
    assert got["8"] == [8, "Bob", 19.0, "short"] and got["10"][1] == "Cy"
    assert rt.lookup(["9"])  # the old copy is untouched


def test_terms_drop_stop_words_and_keep_tokens_like_osha_30() -> None:
    assert terms("Forklift driver with OSHA-30 near St. Louis") == [
        "forklift",
        "driver",
        "osha-30",
        "st",
        "louis",
    ]


def test_snippet_is_a_window_around_the_first_match_with_every_word_marked() -> None:
    row = {"worker_id": 7, "resume_text": RESUME, "notes": "forklift " * 3}
    s = snippet(row, ["resume_text"], ["forklift", "osha"])
    assert s is not None and s["column"] == "resume_text"
    assert s["text"].startswith("…") and len(s["text"]) <= 245
    marked = [s["text"][a:b] for a, b in s["marks"]]
    assert marked == ["forklift", "OSHA"]
    # Short words only as whole words; long ones also as prefixes ("forklift" → "forklifts").
    row = {"t": "Staging lead, forklifts, St. Louis"}
    s = snippet(row, ["t"], ["st", "forklift"])
    assert s is not None and [s["text"][a:b] for a, b in s["marks"]] == ["forklift", "St"]
    assert found_terms(row, ["st", "staff", "louis"]) == ["st", "louis"]
    # No words (a vector query): the start of the text, nothing marked; no text: None.
    s = snippet({"t": RESUME}, ["t"], [])
    assert s is not None and s["marks"] == [] and s["text"].startswith("Material handler")
    assert snippet({"t": None}, ["t"], ["x"]) is None


def test_render_is_the_auto_embed_text() -> None:
    assert render("{role} in {city}", {"role": "Welder", "city": None}) == "Welder in "
