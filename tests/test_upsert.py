"""Datasets that change every week, on a real stack: upsert by key with deletes and a new
column, compaction, time travel, gc retention, and auto-embed that re-embeds only the rows
whose text changed. Expected answers are computed independently with DuckDB from the CSVs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import duckdb
import httpx
import nats
import pytest

from lakehouse.devtools.datagen import generate, next_week
from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from lakehouse.platform.storage import open_storage
from lakehouse.tables.gc import sweep
from schemas import subjects as S

pytestmark = pytest.mark.slow

# Order-free content checksum over what an export carries (every value as text; a column the
# older rows lack reads as null there and as '' in the CSV).
CHECK = (
    "SELECT count(*), CAST(sum(hash(CAST(worker_id AS VARCHAR), city, phone, {badge}, "
    "resume_text)) AS VARCHAR) FROM {src}"
)

BADGE = "coalesce(badge, '')"


def truth(csv: Path, *, badge: bool) -> list[Any]:
    src = f"read_csv('{csv}', all_varchar = true)"
    return list(duckdb.sql(CHECK.format(src=src, badge=BADGE if badge else "''")).fetchall()[0])


def live(c: httpx.Client, name: str, as_of: dict[str, int] | None = None, *, badge: bool) -> Any:
    column = BADGE if badge else "''"
    body: dict[str, Any] = {"sql": CHECK.format(src=name, badge=column)}
    if as_of:
        body["as_of"] = as_of
    return c.post("/v1/sql", json=body)


async def compact(stack: Stack, name: str) -> dict[str, Any]:
    nc = await nats.connect(stack.nats_url)
    try:
        msg = await nc.request(S.CATALOG_COMPACT, json.dumps({"name": name}).encode(), timeout=60)
        return dict(json.loads(msg.data))
    finally:
        await nc.close()


async def collect(stack: Stack, keep: int) -> dict[str, list[int]]:
    nc = await nats.connect(stack.nats_url)
    try:
        report = await sweep(nc, open_storage(stack.settings), 0, keep_revisions=keep)
        return report.dropped_revisions
    finally:
        await nc.close()


# No automatic compaction: the test looks at the upsert's own objects, then compacts.
NO_AUTO_COMPACT = {"catalog": {"compact_deleted_ratio": 1.0}}


@pytest.mark.stack(kinds=("catalog", "ingest", "query"), overrides=NO_AUTO_COMPACT)
def test_weekly_upsert_100k_with_new_column_time_travel_compaction_and_gc(
    stack: Stack, tmp_path: Path
) -> None:
    rows = 100_000
    week1, week2 = tmp_path / "week1.csv", tmp_path / "week2.csv"
    generate(week1, rows, seed=15)
    made = next_week(week1, week2, rows=rows)
    with stack.client(timeout=300) as c:
        r = c.post("/v1/ingest", params={"name": "staff"}, content=week1.read_bytes())
        assert r.status_code == 200, r.text
        assert live(c, "staff", badge=False).json()["rows"][0] == truth(week1, badge=False)

        # The index a first auto-embed would have left (the embedding itself is shown on a
        # small dataset below; here only what the upsert sends to the model is counted).
        template = "{role} in {city}, {state}. Skills: {skills}."
        index = {"name": "staff", "dim": 384, "dataset": "staff", "id_column": "worker_id"}
        r = c.post("/v1/vectors/indexes", json={**index, "text_template": template})
        assert r.status_code == 201, r.text
        # A new column is a 409 unless the ingest allows evolution.
        upsert = {"name": "staff", "mode": "upsert", "key": "worker_id", "delete_missing": "true"}
        r = c.post("/v1/ingest", params=upsert, content=week2.read_bytes())
        assert r.status_code == 409 and "schema=evolve" in r.json()["detail"], r.text
        embed = {"embed_index": "staff", "id_column": "worker_id", "text_template": template}
        r = c.post(
            "/v1/ingest", params={**upsert, **embed, "schema": "evolve"}, content=week2.read_bytes()
        )
        assert r.status_code == 200, r.text
        job = r.json()
        # Only the new rows and the rows whose embedded text changed go to the model.
        assert job["embed"] == {
            "texts_embedded": made["new"] + made["text_changed"],
            "unchanged_skipped": job["dataset_rows"] - made["new"] - made["text_changed"],
            "deleted": made["gone"],
        }
        assert (job["revision"], job["mode"]) == (2, "upsert")
        assert (job["inserted"], job["updated"], job["deleted"]) == (
            made["new"],
            made["changed"],
            made["gone"],
        )
        assert job["schema_change"]["added"] == ["badge"]
        assert job["dataset_rows"] == rows - made["gone"] + made["new"]

        # SQL over the new revision matches DuckDB over the new export; revision 1 the old one.
        assert live(c, "staff", badge=True).json()["rows"][0] == truth(week2, badge=True)
        assert live(c, "staff", {"staff": 1}, badge=False).json()["rows"][0] == truth(
            week1, badge=False
        )
        r = live(c, "staff", {"staff": 9}, badge=False)
        assert r.status_code == 400 and "revisions available: [1, 2]" in r.json()["detail"]
        history = c.get("/v1/catalog/staff/history").json()["events"]
        assert [e["change"]["mode"] for e in history] == ["replace", "upsert"]
        assert history[1]["change"]["schema_change"]["added"] == ["badge"]
        m = c.get("/v1/catalog/staff").json()
        assert (len(m["objects"]), len(m["deletes"])) == (2, 1)  # the old object untouched
        assert m["objects"][1]["rows"] == made["new"] + made["changed"]

        # Duplicate keys are a 400 naming the key and rows; nothing changes.
        dup = b"worker_id,name\n5,A\n6,B\n5,C\n"
        r = c.post("/v1/ingest", params={**upsert, "schema": "any"}, content=dup)
        assert r.status_code == 400 and "'5' in data rows [1, 3]" in r.json()["detail"], r.text

        # Compaction: the same rows in one object, no delete sets; time travel still works.
        reply = asyncio.run(compact(stack, "staff"))
        assert reply["manifest"]["revision"] == 3, reply
        assert (len(reply["manifest"]["objects"]), reply["manifest"]["deletes"]) == (1, [])
        assert live(c, "staff", badge=True).json()["rows"][0] == truth(week2, badge=True)
        assert live(c, "staff", {"staff": 1}, badge=False).json()["rows"][0] == truth(
            week1, badge=False
        )

        # gc keeping one revision drops the objects of revisions 1 and 2.
        assert asyncio.run(collect(stack, keep=1)) == {"staff": [1, 2]}
        r = live(c, "staff", {"staff": 1}, badge=False)
        assert r.status_code == 400 and "revisions available: [3]" in r.json()["detail"], r.text
        assert live(c, "staff", badge=True).json()["rows"][0] == truth(week2, badge=True)


@pytest.mark.stack(
    kinds=("catalog", "ingest", "query", "embed", "vectors"), overrides=NO_AUTO_COMPACT
)
def test_upsert_re_embeds_only_the_rows_whose_text_changed(stack: Stack, tmp_path: Path) -> None:
    week1, week2 = tmp_path / "week1.csv", tmp_path / "week2.csv"
    generate(week1, 300, seed=16)
    made = next_week(week1, week2, rows=300)  # 3 moved, 3 new phones, 1 gone, 3 new
    embed = {
        "embed_index": "crew",
        "id_column": "worker_id",
        "text_template": "{role} in {city}, {state}. Skills: {skills}.",
    }
    with stack.client(timeout=300) as c:

        def count() -> int:
            return int(c.get("/v1/vectors/indexes/crew").json()["count"])

        r = c.post("/v1/ingest", params={"name": "crew", **embed}, content=week1.read_bytes())
        assert r.status_code == 200, r.text
        wait_until(lambda: count() == 300, timeout=240, interval=0.5, what="first embed")
        search = {"text": "forklift", "k": 3, "fields": ["city"]}  # loads the rows' copy
        assert c.post("/v1/vectors/indexes/crew/search", json=search).status_code == 200
        params = {
            "name": "crew",
            "mode": "upsert",
            "key": "worker_id",
            "delete_missing": "true",
            "schema": "evolve",
            **embed,
        }
        r = c.post("/v1/ingest", params=params, content=week2.read_bytes())
        assert r.status_code == 200, r.text
        job = r.json()
        rows = 300 - made["gone"] + made["new"]
        embedded = made["text_changed"] + made["new"]
        assert job["embed"] == {
            "texts_embedded": embedded,
            "unchanged_skipped": rows - embedded,
            "deleted": made["gone"],
        }
        assert job["embed_batches"] == 1
        wait_until(lambda: count() == rows, timeout=120, interval=0.2, what="index follows")
        wait_until(
            lambda: c.get(f"/v1/jobs/{job['job_id']}").json()["embed"]["batches_done"] == 1,
            timeout=120,
            interval=0.2,
            what="the upsert's embed batch",
        )
        # A moved worker is found by the new city.
        moved = c.post(
            "/v1/sql", json={"sql": "SELECT role, city, state FROM crew WHERE worker_id = 7"}
        ).json()["rows"][0]
        assert moved[1].endswith(" Heights")
        r = c.post(
            "/v1/vectors/indexes/crew/search",
            json={"text": f"{moved[0]} in {moved[1]}, {moved[2]}", "k": 3, "fields": ["city"]},
        )
        hits = {h["id"]: h["row"] for h in r.json()["hits"]}
        assert hits["7"] == {"city": moved[1]}, r.text
        # An upload of just the rows that changed (no delete_missing), without auto-embed,
        # updates those alone, and the query worker's copy of the rows follows it without
        # reading the rest again.
        week3 = tmp_path / "week3.csv"
        duckdb.sql(
            f"COPY (SELECT * REPLACE (city || ' East' AS city) FROM read_csv('{week2}', "
            f"all_varchar = true) WHERE worker_id = '8') TO '{week3}' (HEADER)"
        )
        plain = {"name": "crew", "mode": "upsert", "key": "worker_id"}
        r = c.post("/v1/ingest", params=plain, content=week3.read_bytes())
        assert r.status_code == 200, r.text
        assert (r.json()["updated"], r.json()["dataset_rows"]) == (1, rows)
        log = next(stack.root.glob("query-*.log"))
        wait_until(lambda: "rows followed the upsert" in log.read_text(), timeout=30, what="log")
        # The same upload again with auto-embed changes no row, but the index's text hashes
        # say worker 8's text is not the one it was embedded from: that one is embedded.
        r = c.post("/v1/ingest", params={**plain, **embed}, content=week3.read_bytes())
        assert r.status_code == 200, r.text
        assert (r.json()["updated"], r.json()["embed_batches"]) == (0, 1)
        assert r.json()["embed"] == {
            "texts_embedded": 1,
            "unchanged_skipped": rows - 1,
            "deleted": 0,
        }
        job3 = r.json()["job_id"]
        wait_until(
            lambda: c.get(f"/v1/jobs/{job3}").json()["embed"]["batches_done"] == 1,
            timeout=120,
            interval=0.2,
            what="the third upsert's embed batch",
        )
        role, city, state = c.post(
            "/v1/sql", json={"sql": "SELECT role, city, state FROM crew WHERE worker_id = 8"}
        ).json()["rows"][0]
        assert city.endswith(" East")
        r = c.post(
            "/v1/vectors/indexes/crew/search",
            json={**search, "text": f"{role} in {city}, {state}"},
        )
        assert {h["id"]: h["row"] for h in r.json()["hits"]}.get("8") == {"city": city}, r.text
