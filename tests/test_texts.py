"""The text hashes kept with an index (what its items were embedded from): fast, on the file
backend."""

from __future__ import annotations

from pathlib import Path

from lakehouse.platform.storage import keys
from lakehouse.platform.storage.file import FileStorage
from lakehouse.vectors import texts


async def test_the_last_word_per_id_wins_and_many_files_merge_into_one(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "objects")
    work = tmp_path / "work"
    work.mkdir()
    assert await texts.recorded(storage, "crew", work) is None  # nothing recorded yet
    a, b = texts.sha("Welder in Peoria"), texts.sha("Welder in Joliet")
    await texts.record(storage, "crew", texts.tag(1, "j1"), ["1", "2"], [a, a], work)
    await texts.record(storage, "crew", texts.tag(2, "j2"), ["1", "2"], [b, None], work)
    assert await texts.recorded(storage, "crew", work) == {"1": b, "2": None}
    for rev in range(3, 3 + texts.MERGE_AFTER):
        await texts.record(storage, "crew", texts.tag(rev, f"j{rev}"), [str(rev)], [a], work)
    state = await texts.recorded(storage, "crew", work)  # reads 10 files, writes one
    assert state is not None and state["1"] == b and state["2"] is None
    listing = await storage.list(keys.embedded_texts("crew"))
    assert len(listing.objects) == 1
    merged = await texts.recorded(storage, "crew", work)
    assert merged == {k: v for k, v in state.items() if v is not None}  # deletions dropped
