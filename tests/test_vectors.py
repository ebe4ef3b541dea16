"""Vector indexes through the gateway on real NATS: recall, upsert/delete, errors, the direct
NATS paths, and semantic search over a generated staffing set with the packaged model."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import nats
import numpy as np
import pytest

from lakehouse.devtools.bench.data import clustered, exact_topk, recall
from lakehouse.devtools.datagen import iter_rows
from lakehouse.devtools.servers import eventually, wait_until
from lakehouse.devtools.stack import Stack
from lakehouse.devtools.testing import dead_letters, inline_payload
from lakehouse.vectors.batches import encode, partition_of
from lakehouse.vectors.idsets import query
from schemas import subjects as S
from schemas.messages import DeadLetter
from schemas.vectors import PartitionReply, SearchRequest

pytestmark = pytest.mark.stack(kinds=("embed", "vectors"), shared=True)


def new_index(c: httpx.Client, dim: int, **kw: object) -> str:
    name = f"ix_{uuid.uuid4().hex[:8]}"
    r = c.post("/v1/vectors/indexes", json={"name": name, "dim": dim, **kw})
    assert r.status_code == 201, r.text
    return name


def count(c: httpx.Client, name: str) -> int:
    return int(c.get(f"/v1/vectors/indexes/{name}").json()["count"])


def wait_count(c: httpx.Client, name: str, n: int, timeout: float = 120) -> None:
    wait_until(
        lambda: count(c, name) == n, timeout=timeout, interval=0.2, what=f"{n} vectors in {name}"
    )


def add_vectors(
    c: httpx.Client, name: str, vectors: np.ndarray, start: int = 0, batch: int = 2000
) -> None:
    for i in range(0, len(vectors), batch):
        items = [
            {"id": f"v{start + j}", "vector": vectors[j].tolist(), "metadata": {"n": start + j}}
            for j in range(i, min(i + batch, len(vectors)))
        ]
        r = c.post(f"/v1/vectors/indexes/{name}/items", json={"items": items})
        assert r.status_code == 202, r.text


def filled_index(stack: Stack, data: np.ndarray, **kw: object) -> str:
    """A new index holding ``data`` as v0, v1, ... once every vector is counted."""
    with stack.client(timeout=120) as c:
        name = new_index(c, data.shape[1], **kw)
        add_vectors(c, name, data)
        wait_count(c, name, len(data))
    return name


@pytest.mark.slow
def test_recall_at_10_on_20k_clustered_vectors(stack: Stack) -> None:
    data = clustered(20_000, 128)
    queries = clustered(200, 128, sample=99)
    with stack.client(timeout=120) as c:
        name = new_index(c, 128)
        add_vectors(c, name, data)
        wait_count(c, name, 20_000)
        found = []
        for q in queries:
            r = c.post(f"/v1/vectors/indexes/{name}/search", json={"vector": q.tolist(), "k": 10})
            assert r.status_code == 200 and not r.json()["partial"]
            found.append([int(h["id"][1:]) for h in r.json()["hits"]])
    assert recall(found, exact_topk(data, queries, 10)) >= 0.95


def test_upsert_replaces_and_delete_removes(stack: Stack) -> None:
    with stack.client() as c:
        name = new_index(c, 4, metric="l2", partitions=2)
        a, b = [1.0, 0, 0, 0], [0, 1.0, 0, 0]
        c.post(
            f"/v1/vectors/indexes/{name}/items",
            json={
                "items": [{"id": "x", "vector": a, "metadata": {"v": 1}}, {"id": "y", "vector": b}]
            },
        )
        wait_count(c, name, 2)
        c.post(
            f"/v1/vectors/indexes/{name}/items",
            json={"items": [{"id": "x", "vector": b, "metadata": {"v": 2}}]},
        )

        def moved() -> bool:
            hits = c.post(f"/v1/vectors/indexes/{name}/search", json={"vector": b, "k": 5}).json()[
                "hits"
            ]
            return (
                sorted(h["id"] for h in hits) == ["x", "y"]
                and hits[0]["distance"] < 1e-6
                and hits[1]["distance"] < 1e-6
            )

        wait_until(moved, what="upsert applied")
        assert count(c, name) == 2  # never two entries for one id
        hits = c.post(f"/v1/vectors/indexes/{name}/search", json={"vector": b, "k": 5}).json()[
            "hits"
        ]
        assert {h["id"]: h["metadata"] for h in hits}["x"] == {"v": 2}
        assert (
            c.request(
                "DELETE", f"/v1/vectors/indexes/{name}/items", json={"ids": ["x"]}
            ).status_code
            == 202
        )
        wait_count(c, name, 1)
        hits = c.post(f"/v1/vectors/indexes/{name}/search", json={"vector": b, "k": 5}).json()[
            "hits"
        ]
        assert [h["id"] for h in hits] == ["y"]
        c.post(f"/v1/vectors/indexes/{name}/items", json={"items": [{"id": "x", "vector": a}]})
        wait_count(c, name, 2)  # a deleted id can come back


def test_errors_and_empty_index(stack: Stack) -> None:
    with stack.client() as c:
        name = new_index(c, 4)

        def owned() -> bool:
            r = c.post(f"/v1/vectors/indexes/{name}/search", json={"vector": [1, 0, 0, 0]})
            return r.status_code == 200 and r.json()["partial"] is False

        wait_until(owned, what="partitions owned")
        r = c.post(f"/v1/vectors/indexes/{name}/search", json={"vector": [1, 0, 0, 0]})
        assert (
            r.status_code == 200 and r.json()["hits"] == [] and r.json()["missing_partitions"] == []
        )
        r = c.post(f"/v1/vectors/indexes/{name}/search", json={"vector": [1, 0, 0]})
        assert r.status_code == 400 and "dimension" in r.json()["detail"]
        r = c.post(
            f"/v1/vectors/indexes/{name}/items", json={"items": [{"id": "a", "vector": [1, 2]}]}
        )
        assert r.status_code == 400 and "dimension" in r.json()["detail"]
        assert c.post("/v1/vectors/indexes", json={"name": name, "dim": 4}).status_code == 409
        assert (
            c.post(
                "/v1/vectors/indexes", json={"name": "m", "dim": 4, "metric": "hamming"}
            ).status_code
            == 400
        )
        assert c.post("/v1/vectors/indexes", json={"name": "bad.name", "dim": 4}).status_code == 400
        assert c.post("/v1/vectors/indexes/nope/search", json={"vector": [1]}).status_code == 404
        listed = [i["name"] for i in c.get("/v1/vectors/indexes").json()["indexes"]]
        assert name in listed
        assert c.delete(f"/v1/vectors/indexes/{name}").status_code == 200
        assert c.get(f"/v1/vectors/indexes/{name}").status_code == 404


async def test_direct_nats_texts_and_binary_vectors(stack: Stack) -> None:
    with stack.client() as c:
        texts = new_index(c, 384, partitions=2)
        vecs = new_index(c, 8, partitions=3)
    nc = await nats.connect(stack.nats.url)
    js = nc.jetstream()
    # 1) {id, text} batches, as an upstream system would publish them (no project code).
    body = {
        "batch_id": "up-1",
        "index": texts,
        "items": [
            {"id": "w1", "text": "Welder, MIG and TIG"},
            {"id": "w2", "text": "CNC operator, first article inspection"},
        ],
    }
    await js.publish(
        f"lakehouse.embed.requests.{texts}",
        json.dumps(body).encode(),
        headers={"Nats-Msg-Id": "up-1"},
    )
    # 2) precomputed vectors in the documented binary format (Arrow IPC), per partition.
    ids = [f"p{i}" for i in range(30)]
    v = clustered(30, 8)
    for p in range(3):
        rows = [i for i, item in enumerate(ids) if partition_of(item, 3) == p]
        data = encode([ids[i] for i in rows], v[rows], None, dim=8)
        await js.publish(f"lakehouse.vectors.{vecs}.{p}", data, headers={"Nats-Msg-Id": f"b{p}"})
    await nc.close()
    with stack.client() as c:
        await eventually(
            lambda: count(c, texts) == 2 and count(c, vecs) == 30,
            timeout=60,
            what="both indexes filled",
        )
        hit = c.post(
            f"/v1/vectors/indexes/{texts}/search", json={"text": "welding", "k": 1}
        ).json()["hits"][0]
        assert hit["id"] == "w1"
        hit = c.post(
            f"/v1/vectors/indexes/{vecs}/search", json={"vector": v[7].tolist(), "k": 1}
        ).json()["hits"][0]
        assert hit["id"] == "p7"


async def test_bad_binary_batch_is_dead_lettered_and_skipped(stack: Stack) -> None:
    with stack.client() as c:
        name = new_index(c, 4, partitions=1)
    subject = f"lakehouse.vectors.{name}.0"
    bad = encode(["bad"], np.ones((1, 3), np.float32), dim=3)
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()
        sent = await js.publish(subject, bad)
        await js.publish(subject, encode(["good"], np.ones((1, 4), np.float32), dim=4))

        async def letters() -> list[DeadLetter]:
            return [d for d in await dead_letters(js, "vectors") if d.subject == subject]

        [letter] = await eventually(letters, timeout=60, what="the bad batch's dead letter")
    finally:
        await nc.close()
    assert letter.error == "vector dimension 3 does not match the index dimension 4"
    assert letter.permanent and letter.stream_seq == sent.seq
    assert inline_payload(letter) == bad  # the batch itself, for `lakehouse dlq retry`
    with stack.client() as c:  # skipped: the batch after it is applied
        wait_count(c, name, 1)
        hits = c.post(f"/v1/vectors/indexes/{name}/search", json={"vector": [1, 1, 1, 1]}).json()
        assert [h["id"] for h in hits["hits"]] == ["good"]


def staffing_text(row: list[str]) -> str:
    # worker_id,name,role,city,state,zip,phone,email,skills,certifications,...,resume_text
    return f"{row[2]} in {row[3]}, {row[4]}. Skills: {row[8]}. Certifications: {row[9]}."


@pytest.mark.slow
def test_semantic_search_over_generated_staffing_set(stack: Stack) -> None:
    rows = list(iter_rows(500, seed=5))
    with stack.client(timeout=300) as c:
        name = new_index(c, 384)
        for i in range(0, len(rows), 250):
            items = [
                {"id": r[0], "text": staffing_text(r), "metadata": {"role": r[2]}}
                for r in rows[i : i + 250]
            ]
            assert (
                c.post(f"/v1/vectors/indexes/{name}/items", json={"items": items}).status_code
                == 202
            )
        wait_count(c, name, len(rows), timeout=300)

        def best(q: str) -> list[dict]:  # type: ignore[type-arg]
            return c.post(f"/v1/vectors/indexes/{name}/search", json={"text": q, "k": 5}).json()[
                "hits"
            ]

        electric = best("electrician with industrial wiring")
        forklift = best("forklift driver OSHA-30")
        dental = best("dental hygienist")
    assert electric[0]["metadata"]["role"] == "Electrician"
    assert forklift[0]["metadata"]["role"] in (
        "Forklift Operator",
        "Material Handler",
        "Warehouse Associate",
    )
    matched = max(electric[0]["distance"], forklift[0]["distance"])
    e, f, d = (hits[0]["distance"] for hits in (electric, forklift, dental))
    print(f"best distances: electrician {e:.3f}, forklift {f:.3f}, dental {d:.3f}")
    assert dental[0]["distance"] > matched + 0.1


async def test_concurrent_searches_are_answered_together_each_as_if_alone(stack: Stack) -> None:
    """64 searches sent at once over NATS (the gateway's binary form, k 1..10): the vector
    worker answers them in shared batches (its batch-size histogram shows more than one
    search per batch) and every answer equals the same search sent alone."""
    rng = np.random.default_rng(11)
    data = rng.standard_normal((3000, 32), dtype=np.float32)
    name = filled_index(stack, data, partitions=2)
    queries = rng.standard_normal((64, 32), dtype=np.float32)
    nc = await nats.connect(stack.nats_url)

    async def search(i: int) -> list[tuple[str, float]]:
        body, headers = query(queries[i].tolist(), 1 + i % 10, None, None)
        msg = await nc.request(S.search(name), body, timeout=10, headers=headers)
        parts = json.loads(msg.data)
        for part in parts:  # the wire form is the contract's (PartitionReply), field for field
            reply = PartitionReply.model_validate(part)
            assert set(part) == set(PartitionReply.model_fields), part
            assert [
                h.model_dump(include={"id", "distance", "metadata"}) for h in reply.hits
            ] == part["hits"]
        assert sorted(p["partition"] for p in parts) == [0, 1]  # one worker owns both
        hits = sorted((h["distance"], h["id"]) for p in parts for h in p["hits"])
        return [(i, round(d, 5)) for d, i in hits[: 1 + i % 10]]

    try:
        together = await asyncio.gather(*(search(i) for i in range(64)))
        alone = [await search(i) for i in range(64)]
    finally:
        await nc.close()
    assert together == alone
    assert all(len(hits) == 1 + i % 10 for i, hits in enumerate(together))
    health = stack.health()
    assert health is not None
    (instance,) = health["workers"]["vectors"]["instances"]
    with httpx.Client() as http:
        text = http.get(f"http://127.0.0.1:{instance['metrics_port']}/metrics").text
    lines = [ln for ln in text.splitlines() if f'index="{name}"' in ln]
    count = next(float(ln.split()[-1]) for ln in lines if "_batch_size_count" in ln)
    total = next(float(ln.split()[-1]) for ln in lines if "_batch_size_sum" in ln)
    assert total == 128 and count < 128, lines  # 64 together and 64 alone, fewer batches


async def test_direct_json_search_with_allowed_ids_answers_only_among_them(stack: Stack) -> None:
    """The JSON form of a search (direct NATS publishers) with ``allowed_ids``: the hits are
    the exact nearest among those ids only."""
    rng = np.random.default_rng(5)
    data = rng.standard_normal((300, 8), dtype=np.float32)
    name = filled_index(stack, data, partitions=2)
    allowed = [f"v{i}" for i in range(0, 300, 7)]
    q = rng.standard_normal(8, dtype=np.float32)
    req = SearchRequest(vector=q.tolist(), k=3, allowed_ids=allowed)
    nc = await nats.connect(stack.nats_url)
    try:
        msg = await nc.request(S.search(name), req.model_dump_json().encode(), timeout=10)
    finally:
        await nc.close()
    hits = sorted((h["distance"], h["id"]) for p in json.loads(msg.data) for h in p["hits"])
    rows = data[[int(i[1:]) for i in allowed]]
    cos = rows @ q / np.linalg.norm(rows, axis=1) / np.linalg.norm(q)
    want = [allowed[i] for i in np.argsort(-cos)[:3]]
    assert [i for _, i in hits[:3]] == want
