"""Filtered (hybrid) search and auto-embed on ingest, end to end on real NATS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lakehouse.devtools.bench.data import clustered
from lakehouse.devtools.datagen import generate
from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack

ALL = ("catalog", "ingest", "query", "embed", "vectors")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("hybrid")).start(ALL)
    yield s
    s.stop()


def test_filtered_search_recall_at_1_and_0_1_percent(stack: Stack) -> None:
    n, dim = 20_000, 64
    data = clustered(n, dim, seed=11)
    buckets = np.arange(n) % 1000  # bucket < 10 keeps 1%; bucket = 7 keeps 0.1%
    csv = "id,bucket\n" + "".join(f"v{i},{buckets[i]}\n" for i in range(n))
    with stack.client(timeout=120) as c:
        assert c.post("/v1/ingest?name=attrs", content=csv.encode()).status_code == 200
        r = c.post(
            "/v1/vectors/index",
            json={"name": "filtered", "dim": dim, "dataset": "attrs", "id_column": "id"},
        )
        assert r.status_code == 201, r.text
        for i in range(0, n, 2000):
            items = [{"id": f"v{j}", "vector": data[j].tolist()} for j in range(i, i + 2000)]
            assert (
                c.post("/v1/vectors/index/filtered/add", json={"items": items}).status_code == 202
            )
        wait_until(
            lambda: c.get("/v1/vectors/index/filtered").json()["count"] == n,
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
                    "/v1/vectors/index/filtered/search",
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
            "/v1/vectors/index/filtered/search",
            json={"vector": queries[0].tolist(), "filter": "bucket = -1"},
        )
        assert r.json()["hits"] == []
        r = c.post(
            "/v1/vectors/index/filtered/search",
            json={"vector": queries[0].tolist(), "filter": "nonsense_column = 1"},
        )
        assert r.status_code == 400


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
            return c.get("/v1/vectors/index/staff").json()["count"] == 300

        wait_until(embedded, timeout=240, interval=0.5, what="auto-embed to finish")
        progress = c.get(f"/v1/jobs/{job['job_id']}").json()["embed"]
        assert progress == {"index": "staff", "batches": 2, "batches_done": 2}
        # Re-ingesting the same rows adds no duplicates (upsert by id).
        assert c.post("/v1/ingest", params=params, content=csv.read_bytes()).status_code == 200
        wait_until(embedded, timeout=240, interval=0.5, what="re-embed")
        r = c.post(
            "/v1/vectors/index/staff/search",
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
