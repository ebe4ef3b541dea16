"""Catalog semantics on real NATS: racing replicas, restarts, restore after a store loss,
orphan GC, and an upstream system publishing an IngestRequest with plain nats-py."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import nats
import pytest

from lakehouse.devtools.servers import eventually, wait_until
from lakehouse.devtools.stack import Stack
from schemas import subjects as S

pytestmark = pytest.mark.slow

CSV = b"id,name\n1,Alice\n2,Bob\n"


def register_body(name: str, fp: str, request_id: str, type_: str = "int64") -> bytes:
    return json.dumps(
        {
            "request_id": request_id,
            "name": name,
            "schema_fingerprint": fp,
            "columns": [{"name": "id", "type": type_, "nullable": False}],
            "objects": [],
        }
    ).encode()


async def test_racing_catalog_replicas_serialize_registers(stack: Stack) -> None:
    stack.spawn("catalog", "worker", "catalog")  # a second replica
    await eventually(lambda: stack.healthy({"catalog": 2}), timeout=30, what="two catalog replicas")
    nc = await nats.connect(stack.nats.url)

    async def register(fp: str) -> dict:  # type: ignore[type-arg]
        msg = await nc.request(
            S.CATALOG_REGISTER, register_body("race", fp, uuid.uuid4().hex), timeout=10
        )
        return {
            "status": (msg.headers or {}).get("Lakehouse-Status", "200"),
            **json.loads(msg.data),
        }

    # Same schema from 20 writers: every one lands, each on its own revision.
    same = await asyncio.gather(*(register("fp-a") for _ in range(20)))
    assert all(r["status"] == "200" for r in same), same
    assert sorted(r["manifest"]["revision"] for r in same) == list(range(1, 21))
    # Two different schemas racing on a new dataset: exactly one wins, the other gets 409.
    nc2 = await nats.connect(stack.nats.url)
    a, b = await asyncio.gather(
        nc.request(S.CATALOG_REGISTER, register_body("duel", "fp-x", "x1"), timeout=10),
        nc2.request(S.CATALOG_REGISTER, register_body("duel", "fp-y", "y1", "bool"), timeout=10),
    )
    statuses = sorted((m.headers or {}).get("Lakehouse-Status", "200") for m in (a, b))
    assert statuses == ["200", "409"]
    js = nc.jetstream()
    info = await js.stream_info(S.STREAM_CATALOG, subjects_filter=">")
    assert info.state.subjects == {S.catalog_events("race"): 20, S.catalog_events("duel"): 1}
    await nc.close()
    await nc2.close()


def test_restart_catalog_and_query_workers_keeps_state(stack: Stack) -> None:
    with stack.client() as c:
        assert c.post("/v1/ingest?name=keep", content=CSV).status_code == 200
        before = c.get("/v1/catalog").json()
    stack.kill("catalog")
    stack.kill("query")
    stack.spawn("catalog", "worker", "catalog")
    stack.spawn("query", "worker", "query")
    wait_until(stack.healthy, timeout=30, what="restarted workers")
    with stack.client() as c:
        assert c.get("/v1/catalog").json() == before
        r = c.post("/v1/sql", json={"sql": "SELECT name FROM keep ORDER BY id"})
        assert r.json()["rows"] == [["Alice"], ["Bob"]]


def test_catalog_restore_after_nats_store_loss(stack: Stack, tmp_path: Path) -> None:
    with stack.client() as c:
        assert c.post("/v1/ingest?name=survivor", content=CSV).status_code == 200
        more = b"id,name\n3,Carol\n4,Dan\n"
        assert c.post("/v1/ingest?name=survivor&mode=append", content=more).status_code == 200
        manifest = c.get("/v1/catalog/survivor").json()
    # Lose the whole NATS store: a new, empty server on the same port.
    stack.kill("catalog")
    stack.kill("query")
    stack.kill("ingest")
    stack.nats.stop()
    import shutil

    shutil.rmtree(stack.nats.store_dir)
    stack.nats.start()
    out = stack.cli("catalog", "restore")
    assert "restored 1 dataset(s): survivor" in out
    stack.spawn("catalog", "worker", "catalog")
    stack.spawn("query", "worker", "query")
    wait_until(lambda: stack.healthy({"catalog": 1, "query": 1}), timeout=60, what="workers")
    with stack.client() as c:
        assert c.get("/v1/catalog/survivor").json() == manifest
        r = c.post("/v1/sql", json={"sql": "SELECT count(*) FROM survivor"})
        assert r.json()["rows"] == [[4]]
    assert "restored 0 dataset(s)" in stack.cli("catalog", "restore")  # idempotent


def test_gc_deletes_only_unreferenced_objects(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/v1/ingest?name=gcme", content=CSV)
        live = r.json()["key"]
        r = c.post("/v1/ingest?name=gcme", content=CSV + b"3,Carol\n")  # replaces the object
        newer = r.json()["key"]
        c.put("/v1/storage/datasets/gcme/stray/orphan.parquet", content=b"junk")
        out = stack.cli("gc", "--grace", "0")  # revision 1 is kept: time travel can read it
        assert "deleted: datasets/gcme/stray/orphan.parquet" in out and live not in out
        keep_one = {"LAKEHOUSE_CATALOG__KEEP_REVISIONS": "1"}
        out = stack.cli("gc", "--grace", "0", env=keep_one)
        assert f"deleted: {live}" in out and "gcme: revisions [1] no longer readable" in out
        keys = [
            o["key"] for o in c.get("/v1/storage", params={"prefix": "datasets/"}).json()["objects"]
        ]
        assert newer in keys and live not in keys
        assert c.post("/v1/sql", json={"sql": "SELECT count(*) FROM gcme"}).json()["rows"] == [[3]]
        assert "deleted 0" in stack.cli("gc", "--grace", "3600")


async def test_upstream_publishes_ingest_request_with_plain_nats(stack: Stack) -> None:
    # An upstream system: put the CSV in storage, then publish the documented JSON.
    job = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=stack.base) as c:
        await c.put(f"/v1/storage/uploads/{job}.csv", content=CSV)
    nc = await nats.connect(stack.nats.url)
    updates = await nc.subscribe(f"lakehouse.jobs.{job}")
    # delete_source outside staging/ is ignored: a publisher cannot have other keys removed.
    request = {
        "job_id": job,
        "name": "upstream",
        "source_key": f"uploads/{job}.csv",
        "delete_source": True,
    }
    ack = await nc.jetstream().publish(
        "lakehouse.ingest.requests", json.dumps(request).encode(), headers={"Nats-Msg-Id": job}
    )
    assert ack.stream == "LAKEHOUSE_INGEST"
    states = []
    while not states or states[-1]["state"] not in ("succeeded", "failed"):
        states.append(json.loads((await updates.next_msg(timeout=30)).data))
    assert states[-1]["state"] == "succeeded", states[-1]
    assert states[-1]["result"]["row_count"] == 2
    await nc.close()
    async with httpx.AsyncClient(base_url=stack.base) as c:
        r = await c.post("/v1/sql", json={"sql": "SELECT count(*) FROM upstream"})
        assert r.json()["rows"] == [[2]]
        job_state = (await c.get(f"/v1/jobs/{job}")).json()
        assert job_state["state"] == "succeeded"
        assert (await c.get(f"/v1/storage/uploads/{job}.csv")).content == CSV


def test_queries_spread_over_query_replicas(stack: Stack) -> None:
    stack.spawn("query", "worker", "query")
    wait_until(lambda: stack.healthy({"query": 2}), timeout=30, what="two query replicas")
    with stack.client() as c:
        assert c.post("/v1/ingest?name=spread", content=CSV).status_code == 200
        for _ in range(40):
            r = c.post("/v1/sql", json={"sql": "SELECT count(*) FROM spread"})
            assert r.json()["rows"] == [[2]]
        handled = [i["handled"] for i in c.get("/health").json()["workers"]["query"]["instances"]]
    assert len(handled) == 2 and all(h > 0 for h in handled), handled
