"""Filtered (hybrid) search and auto-embed on ingest, end to end on real NATS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import numpy as np
import pytest

from lakehouse.devtools.bench.data import clustered
from lakehouse.devtools.datagen import generate
from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from schemas import subjects as S

ALL = ("catalog", "ingest", "query", "embed", "vectors")


pytestmark = [pytest.mark.slow, pytest.mark.stack(kinds=ALL, shared=True)]


def test_filtered_search_recall_at_1_and_0_1_percent(stack: Stack) -> None:
    n, dim = 20_000, 64
    data = clustered(n, dim, seed=11)
    buckets = np.arange(n) % 1000  # bucket < 10 keeps 1%; bucket = 7 keeps 0.1%
    csv = "id,bucket\n" + "".join(f"v{i},{buckets[i]}\n" for i in range(n))
    with stack.client(timeout=120) as c:
        assert c.post("/v1/ingest?name=attrs", content=csv.encode()).status_code == 200
        r = c.post(
            "/v1/vectors/indexes",
            json={"name": "filtered", "dim": dim, "dataset": "attrs", "id_column": "id"},
        )
        assert r.status_code == 201, r.text
        for i in range(0, n, 2000):
            items = [{"id": f"v{j}", "vector": data[j].tolist()} for j in range(i, i + 2000)]
            assert (
                c.post("/v1/vectors/indexes/filtered/items", json={"items": items}).status_code
                == 202
            )
        wait_until(
            lambda: c.get("/v1/vectors/indexes/filtered").json()["count"] == n,
            timeout=120,
            interval=0.3,
            what="vectors loaded",
        )
        queries = clustered(50, dim, seed=11, sample=12)
        for predicate, keep in (("bucket < 10", buckets < 10), ("bucket = 7", buckets == 7)):
            subset = np.flatnonzero(keep)
            scores = []
            for q in queries:
                r = c.post(
                    "/v1/vectors/indexes/filtered/search",
                    json={"vector": q.tolist(), "k": 10, "filter": predicate},
                )
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["filter_matches"] == subset.size
                got = [int(h["id"][1:]) for h in body["hits"]]
                assert all(keep[g] for g in got)
                truth = subset[np.argsort(-(data[subset] @ q))[:10]]
                scores.append(len(set(got) & set(truth.tolist())) / 10)
            assert np.mean(scores) >= 0.95, (predicate, np.mean(scores))
        r = c.post(
            "/v1/vectors/indexes/filtered/search",
            json={"vector": queries[0].tolist(), "filter": "bucket = -1"},
        )
        assert r.json()["hits"] == []
        r = c.post(
            "/v1/vectors/indexes/filtered/search",
            json={"vector": queries[0].tolist(), "filter": "nonsense_column = 1"},
        )
        assert r.status_code == 400


def applied(c: httpx.Client, name: str) -> dict[int, int]:
    """Per partition: the last vectors-stream sequence its owner has applied."""
    body = c.get(f"/v1/vectors/indexes/{name}").json()
    assert not body["missing_partitions"], body
    return {p["partition"]: p["covered_seq"] for p in body["partitions_detail"]}


def published(stack: Stack, name: str, partitions: list[int]) -> dict[int, int]:
    """Per partition: the sequence of the last batch published for it."""

    async def go() -> dict[int, int]:
        nc = await nats.connect(stack.nats_url)
        try:
            js = nc.jetstream()
            return {
                p: (await js.get_last_msg(S.STREAM_VECTORS, S.vectors(name, p))).seq or 0
                for p in partitions
            }
        finally:
            await nc.close()

    return asyncio.run(go())


def test_auto_embed_on_ingest_then_filtered_text_search(stack: Stack, tmp_path: Path) -> None:
    csv = tmp_path / "workers.csv"
    generate(csv, 300, seed=3)
    template = "{role} in {city}, {state}. Skills: {skills}. Certifications: {certifications}."
    params = {
        "name": "staff",
        "embed_index": "staff",
        "id_column": "worker_id",
        "text_template": template,
    }
    with stack.client(timeout=300) as c:
        r = c.post("/v1/ingest", params=params, content=csv.read_bytes())
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["embed_index"] == "staff" and job["embed_batches"] == 2

        def embedded() -> bool:
            return c.get("/v1/vectors/indexes/staff").json()["count"] == 300

        wait_until(embedded, timeout=240, interval=0.5, what="auto-embed to finish")
        progress = c.get(f"/v1/jobs/{job['job_id']}").json()["embed"]
        assert progress == {"index": "staff", "batches": 2, "batches_done": 2}
        # Re-ingesting the same rows adds no duplicates (upsert by id). Wait for what only
        # the re-ingest produces: its own job's embed batches, then every partition having
        # applied the vectors they published.
        before = applied(c, "staff")
        r = c.post("/v1/ingest", params=params, content=csv.read_bytes())
        assert r.status_code == 200, r.text
        again = r.json()["job_id"]
        assert again != job["job_id"]

        def re_embedded() -> bool:
            return c.get(f"/v1/jobs/{again}").json().get("embed", {}).get("batches_done") == 2

        wait_until(re_embedded, timeout=240, interval=0.5, what="re-ingest's embed batches")
        last = published(stack, "staff", sorted(before))
        assert all(last[p] > before[p] for p in before)  # it did write to every partition
        wait_until(
            lambda: all(seq >= last[p] for p, seq in applied(c, "staff").items()),
            timeout=120,
            interval=0.2,
            what="re-embedded vectors applied",
        )
        assert c.get("/v1/vectors/indexes/staff").json()["count"] == 300
        r = c.post(
            "/v1/vectors/indexes/staff/search",
            json={"text": "electrician with industrial wiring", "k": 5, "filter": "state = 'IL'"},
        )
        assert r.status_code == 200, r.text
        ids = [h["id"] for h in r.json()["hits"]]
        assert ids
        rows = c.post(
            "/v1/sql",
            json={"sql": f"SELECT DISTINCT state FROM staff WHERE worker_id IN ({', '.join(ids)})"},
        ).json()["rows"]
        assert rows == [["IL"]]
        check_rows_with_hits(c)


def check_rows_with_hits(c: httpx.Client) -> None:
    """Search answers carry each hit's row (as /v1/sql gives it), the matched long text with
    the query's words marked, and more-like-this by an item's row."""
    query = {"text": "forklift operator OSHA", "k": 5, "filter": "state = 'IL'"}
    body = c.post("/v1/vectors/indexes/staff/search", json=query).json()
    hits = body["hits"]
    assert hits and body["rows_ms"] > 0
    sql = f"SELECT * EXCLUDE (resume_text) FROM staff WHERE worker_id = {hits[0]['id']}"
    want = c.post("/v1/sql", json={"sql": sql}).json()
    assert hits[0]["row"] == dict(
        zip([col["name"] for col in want["columns"]], want["rows"][0], strict=True)
    )
    for h in hits:
        assert h["row"]["state"] == "IL" and str(h["row"]["worker_id"]) == h["id"]
        assert "resume_text" not in h["row"]  # long text: in the snippet, not the row
        snip = h["snippet"]
        assert snip["column"] == "resume_text" and len(snip["text"]) <= 250
        for start, end in snip["marks"]:
            assert snip["text"][start:end].lower() in {"forklift", "operator", "osha"}
        text = " ".join(str(v) for v in h["row"].values()) + " " + snip["text"]
        assert set(h["terms"]) <= {"forklift", "operator", "osha"}
        assert all(t in text.lower() for t in h["terms"])
    assert any(h["snippet"]["marks"] for h in hits)
    chosen = c.post(
        "/v1/vectors/indexes/staff/search", json={**query, "fields": ["name", "city"]}
    ).json()["hits"]
    assert [h["id"] for h in chosen] == [h["id"] for h in hits]
    assert all(set(h["row"]) == {"name", "city"} for h in chosen)
    bare = c.post("/v1/vectors/indexes/staff/search", json={**query, "fields": []}).json()
    assert all("row" not in h for h in bare["hits"]) and bare["rows_ms"] == 0
    r = c.post("/v1/vectors/indexes/staff/search", json={**query, "fields": ["nope"]})
    assert r.status_code == 400 and "nope" in r.json()["detail"]
    # More like this: the item's row through the index's text template, the item left out.
    item = hits[0]["id"]
    like = c.post("/v1/vectors/indexes/staff/search", json={"like": item, "k": 5}).json()
    assert len(like["hits"]) == 5 and item not in [h["id"] for h in like["hits"]]
    assert like["hits"][0]["row"]["role"] == hits[0]["row"]["role"]
    r = c.post("/v1/vectors/indexes/staff/search", json={"like": "999999"})
    assert r.status_code == 400 and "no row with" in r.json()["detail"], r.text


def test_filter_cache_is_dropped_by_the_event_that_changes_its_dataset(stack: Stack) -> None:
    """A filter's id set is cached in the gateway; an event for another dataset keeps it, a
    new revision of the filtered dataset drops it (pushed, no timer) and the next search sees
    the new rows at once."""
    n, dim = 300, 8
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)

    def attrs(bucket_of: Callable[[int], int]) -> bytes:
        return ("id,bucket\n" + "".join(f"c{i},{bucket_of(i)}\n" for i in range(n))).encode()

    with stack.client(timeout=120) as c:
        assert c.post("/v1/ingest?name=cattrs", content=attrs(lambda i: i % 10)).status_code == 200
        r = c.post(
            "/v1/vectors/indexes",
            json={"name": "cached", "dim": dim, "dataset": "cattrs", "id_column": "id"},
        )
        assert r.status_code == 201, r.text
        items = [{"id": f"c{i}", "vector": vectors[i].tolist()} for i in range(n)]
        assert c.post("/v1/vectors/indexes/cached/items", json={"items": items}).status_code == 202
        wait_until(
            lambda: c.get("/v1/vectors/indexes/cached").json()["count"] == n,
            timeout=60,
            interval=0.2,
            what="vectors loaded",
        )

        def search() -> dict[str, Any]:
            body = {"vector": vectors[0].tolist(), "k": 50, "filter": "bucket = 3"}
            r = c.post("/v1/vectors/indexes/cached/search", json=body)
            assert r.status_code == 200, r.text
            return dict(r.json())

        first, second = search(), search()
        assert (first["filter_cached"], second["filter_cached"]) == (False, True)
        assert first["filter_matches"] == second["filter_matches"] == 30
        assert {h["id"] for h in second["hits"]} == {f"c{i}" for i in range(3, n, 10)}
        assert c.post("/v1/ingest?name=cother", content=b"a\n1\n").status_code == 200
        assert search()["filter_cached"] is True  # another dataset's event: still cached
        # A new revision of cattrs: bucket 3 is now rows 0..59. Ingest answers after the
        # registration; the gateway has dropped the id set once the event reaches it.
        r = c.post("/v1/ingest?name=cattrs", content=attrs(lambda i: 3 if i < 60 else 0))
        assert r.status_code == 200, r.text
        wait_until(
            lambda: search()["filter_matches"] == 60,
            timeout=10,
            interval=0.05,
            what="the catalog event to reach the gateway",
        )
        after = search()
        assert after["filter_cached"] is True and after["filter_matches"] == 60
        assert len(after["hits"]) == 50
        assert {h["id"] for h in after["hits"]} <= {f"c{i}" for i in range(60)}
