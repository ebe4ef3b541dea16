"""The ``upsert`` workload: a staffing dataset of ``rows`` rows, then next week's export of it
(2% changed, 0.5% gone, 1% new, a new column; :func:`lakehouse.devtools.datagen.next_week`)
upserted by ``worker_id`` with auto-embed, next to a full ``replace`` ingest of the same file
in the same run (the floor). The index is created first with the dataset's template, as a previous
auto-embed would have left it, so the upsert embeds only what changed; the counts are checked
(new + text-changed rows embedded, gone rows deleted), timings never are.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from lakehouse.devtools.bench.workloads import Row
from lakehouse.devtools.datagen import generate, next_week
from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack

TEMPLATE = "{role} in {city}, {state}. Skills: {skills}."


def upsert(stack: Stack, rows: int, work: Path) -> list[Row]:
    week1, week2 = work / "week1.csv", work / "week2.csv"
    generate(week1, rows, seed=11)
    made = next_week(week1, week2, rows)
    spec = {
        "name": "weekly",
        "dim": 384,
        "dataset": "roster",
        "id_column": "worker_id",
        "text_template": TEMPLATE,
    }
    params = {
        "name": "roster",
        "mode": "upsert",
        "key": "worker_id",
        "delete_missing": "true",
        "schema": "evolve",
        "embed_index": "weekly",
        "id_column": "worker_id",
        "text_template": TEMPLATE,
        "wait": "3600",
    }
    with httpx.Client(base_url=stack.base, timeout=3600) as c:
        first = {"name": "roster", "wait": "3600"}
        r = c.post("/v1/ingest", params=first, content=week1.read_bytes())
        assert r.status_code == 200, r.text
        c.post("/v1/vectors/indexes", json=spec).raise_for_status()
        t = time.perf_counter()
        r = c.post(
            "/v1/ingest",
            params={"name": "roster_full", "wait": "3600"},
            content=week2.read_bytes(),
        )
        full = time.perf_counter() - t
        r.raise_for_status()
        t = time.perf_counter()
        r = c.post("/v1/ingest", params=params, content=week2.read_bytes())
        ours = time.perf_counter() - t
        r.raise_for_status()
        job = r.json()
        want = (made["new"], made["changed"], made["gone"])
        assert (job["inserted"], job["updated"], job["deleted"]) == want, job
        embedded = job["embed"]["texts_embedded"]
        assert embedded == made["new"] + made["text_changed"], job["embed"]
        assert job["embed"]["deleted"] == made["gone"], job["embed"]

        def embedded_all() -> bool:  # the embed workers finished the job's batches
            done = c.get(f"/v1/jobs/{job['job_id']}").json()["embed"]["batches_done"]
            return bool(done >= job["embed_batches"])

        wait_until(embedded_all, timeout=36_000, interval=0.2, what="the upsert's embeddings")
        embed_s = time.perf_counter() - t - ours
    rate = embedded / embed_s if embed_s > 0 else 0.0
    changes = f"{made['changed']:,} changed, {made['gone']:,} gone, {made['new']:,} new"
    return [
        Row(
            "upsert next week's export, diff + register (s)",
            ours,
            full,
            "s",
            note=f"{changes}; floor: replace-ingest of the same file",
        ),
        Row(
            "upsert: texts re-embedded",
            embedded,
            rows - made["gone"] + made["new"],
            "texts",
            note=f"{job['embed']['unchanged_skipped']:,} unchanged skipped; floor: every row",
        ),
        Row(
            "upsert: embedding the changed texts (s)",
            embed_s,
            (rows - made["gone"] + made["new"]) / rate if rate else None,
            "s",
            note=f"{rate:.0f} texts/s; floor: every row at that rate (estimated)",
        ),
    ]
