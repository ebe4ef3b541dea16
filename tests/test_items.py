"""A partition's items in columnar form (lakehouse.vectors.items): labels, lookups through
hashes (collisions included), metadata, snapshots, and the memory they take."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehouse.vectors import items as items_module
from lakehouse.vectors.items import Items


def test_labels_are_dense_in_order_of_first_arrival_and_stay() -> None:
    items = Items()
    assert items.assign(["a", "b", "a", "c"]).tolist() == [0, 1, 0, 2]
    assert items.assign(["c", "d"]).tolist() == [2, 3]
    assert items.find(["d", "zz", "a", "b"]).tolist() == [3, -1, 0, 1]
    assert [items.id(i) for i in range(4)] == ["a", "b", "c", "d"]
    assert items.ids() == ["a", "b", "c", "d"] and items.ids([3, 1]) == ["d", "b"]
    assert len(items) == 4


def test_unicode_and_empty_ids_round_trip() -> None:
    items = Items()
    ids = ["", "Zoë", "東京-7", "a" * 300]
    assert items.assign(ids).tolist() == [0, 1, 2, 3]
    assert items.ids() == ids and items.find(ids[::-1]).tolist() == [3, 2, 1, 0]


@pytest.mark.parametrize("merge_at", [1 << 16, 3])
def test_every_id_sharing_one_hash_still_finds_its_own_label(
    monkeypatch: pytest.MonkeyPatch, merge_at: int
) -> None:
    """A hash shared by different ids never gives one id another's label: with every id
    hashing alike, pending (no merge) and merged (merge every 3) alike."""
    monkeypatch.setattr(items_module, "_hash", lambda s: 7)
    monkeypatch.setattr(items_module, "MERGE_AT", merge_at)
    items = Items()
    ids = [f"id{i}" for i in range(50)]
    for start in range(0, 50, 7):
        items.assign(ids[start : start + 7])
    assert items.find(ids).tolist() == list(range(50))
    assert items.find(["nope", "id3"]).tolist() == [-1, 3]
    assert items.assign(["id10", "new"]).tolist() == [10, 50]
    again = Items.of(*items.arrow())
    assert again.find([*ids, "new", "nope"]).tolist() == [*range(51), -1]


def test_merging_pending_entries_keeps_every_label(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(items_module, "MERGE_AT", 100)
    items = Items()
    ids = [f"w-{i}" for i in range(1000)]
    for start in range(0, 1000, 64):
        items.assign(ids[start : start + 64])
    assert len(items.pending) < 100 and items.keys.size > 900
    assert items.find(ids[::-1]).tolist() == list(range(999, -1, -1))


def test_metadata_set_replace_drop_and_compact() -> None:
    items = Items()
    labels = items.assign(["a", "b", "c"]).tolist()
    items.set_meta(labels, [{"role": "welder"}, None, {"n": 1, "s": "é"}])
    assert [items.meta(i) for i in labels] == [{"role": "welder"}, None, {"n": 1, "s": "é"}]
    assert items.meta_json(0) == b'{"role":"welder"}'
    items.set_meta([0], [{"role": "forklift"}])
    items.drop_meta([2])
    assert [items.meta(i) for i in labels] == [{"role": "forklift"}, None, None]
    assert items.live_meta == len(b'{"role":"forklift"}') < items.blobs.used
    items.compact_meta()
    assert items.blobs.used == items.live_meta and items.meta(0) == {"role": "forklift"}


def test_replacing_metadata_many_times_does_not_grow_without_bound() -> None:
    items = Items()
    items.assign(["a"])
    for i in range(60_000):
        items.set_meta([0], [{"i": i, "pad": "x" * 20}])
    assert items.blobs.used < (1 << 20) + 64
    assert items.meta(0) == {"i": 59_999, "pad": "x" * 20}


def test_snapshot_columns_round_trip_through_parquet(tmp_path: Path) -> None:
    items = Items()
    items.assign([f"id{i}" for i in range(10)])
    items.set_meta(list(range(0, 10, 2)), [{"i": i} for i in range(0, 10, 2)])
    ids, meta = items.arrow()
    pq.write_table(pa.table({"id": ids, "metadata": meta}), tmp_path / "t.parquet")
    t = pq.read_table(tmp_path / "t.parquet")
    again = Items.of(t.column("id"), t.column("metadata"))
    assert again.ids() == items.ids()
    assert [again.meta(i) for i in range(10)] == [
        {"i": i} if i % 2 == 0 else None for i in range(10)
    ]
    assert again.find(["id9", "id0"]).tolist() == [9, 0]
    # Snapshots written before this layout: string (not large_string) columns, spaced JSON.
    old = Items.of(pa.array(["x", "y"]), pa.array([json.dumps({"a": 1}), None]))
    assert old.ids() == ["x", "y"] and old.meta(0) == {"a": 1} and old.meta(1) is None
    empty = Items.of(pa.array([], pa.string()), pa.array([], pa.string()))
    assert len(empty) == 0 and empty.find(["x"]).tolist() == [-1]


def test_items_cost_tens_of_bytes_beyond_their_text() -> None:
    """100K ids with metadata on every one, as auto-embed-sized items: the buffers hold the
    text plus ~40 B per item (offsets, hashes, labels, references), where Python objects
    cost ~400 B (a str, a dict entry and a metadata dict per item)."""
    n = 100_000
    items = Items()
    ids = [f"workers:{i:07d}" for i in range(n)]
    metas = [{"dataset": "workers", "row": i, "role": "Forklift Operator"} for i in range(n)]
    for start in range(0, n, 1000):
        labels = items.assign(ids[start : start + 1000])
        items.set_meta(labels.tolist(), metas[start : start + 1000])
    items.merge()
    text = sum(len(i) for i in ids) + sum(len(json.dumps(m, separators=(",", ":"))) for m in metas)
    # Buffers are allocated up to 1.5x what they hold.
    assert items.nbytes() <= 1.5 * (text + 44 * n)
    assert np.array_equal(items.find(ids[::7]), np.arange(0, n, 7))
