"""The gateway's filter cache, in process (the stack test in test_hybrid covers the real
query worker and catalog events): hits, precise invalidation, no stale fill, the row cap."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from gateway.filters import Filters, Resolve, tables_read
from lakehouse.platform.errors import BadRequest
from lakehouse.vectors import idsets
from schemas.query import SqlRequest
from schemas.vectors import IndexSpec

SPEC = IndexSpec(
    name="people",
    dim=4,
    partitions=2,
    dataset="staff",
    id_column="id",
    created_at=datetime.now(UTC),
)


def answering(ids: list[str], truncated: bool = False) -> tuple[list[SqlRequest], Resolve]:
    seen: list[SqlRequest] = []

    async def run(req: SqlRequest) -> pa.Table:
        seen.append(req)
        meta = {"lakehouse.truncated": str(truncated).lower()}
        return pa.table({"id": ids}).replace_schema_metadata(meta)

    return seen, run


def test_tables_read_names_every_dataset_a_predicate_touches() -> None:
    sql = "SELECT id FROM \"staff\" WHERE city IN (SELECT city FROM Hubs) AND state = 'IL'"
    assert tables_read(sql) == {"staff", "hubs"}
    assert tables_read("SELECT FROM WHERE (") is None


async def test_hits_and_precise_invalidation() -> None:
    filters = Filters(1 << 20)
    filters.live = True
    seen, run = answering(["a", "b", "c"])
    got, cached = await filters.ids(SPEC, "state = 'IL'", 7, run, 100)
    assert not cached and got.count == 3 and seen[0].min_catalog_seq == 7
    assert got.digest == idsets.encode(["a", "b", "c"], 2).digest
    again, cached = await filters.ids(SPEC, "state = 'IL'", 7, run, 100)
    assert cached and again == got and len(seen) == 1
    filters.changed("other")
    assert (await filters.ids(SPEC, "state = 'IL'", 7, run, 100))[1]
    filters.changed("STAFF")
    assert not (await filters.ids(SPEC, "state = 'IL'", 7, run, 100))[1]
    assert len(seen) == 2


async def test_a_result_overtaken_by_an_event_is_not_kept() -> None:
    filters = Filters(1 << 20)
    filters.live = True

    async def racing(req: SqlRequest) -> pa.Table:
        filters.changed("staff")  # the dataset changed while the query ran
        return pa.table({"id": ["a"]})

    assert not (await filters.ids(SPEC, "x = 1", 0, racing, 100))[1]
    assert not filters.entries


async def test_nothing_is_kept_until_events_are_followed_or_past_the_budget() -> None:
    _, run = answering(["a"] * 10)
    filters = Filters(1 << 20)  # live is False: catalog events not followed yet
    await filters.ids(SPEC, "x = 1", 0, run, 100)
    assert not filters.entries
    filters = Filters(10)
    filters.live = True
    await filters.ids(SPEC, "x = 1", 0, run, 100)
    assert not filters.entries and filters.size == 0


async def test_too_many_matches_and_unfilterable_indexes_are_400s() -> None:
    filters = Filters(1 << 20)
    _, run = answering(["a"], truncated=True)
    with pytest.raises(BadRequest, match="more than 100 rows"):
        await filters.ids(SPEC, "x = 1", 0, run, 100)
    bare = SPEC.model_copy(update={"dataset": None})
    with pytest.raises(BadRequest, match="cannot be filtered"):
        await filters.ids(bare, "x = 1", 0, run, 100)
