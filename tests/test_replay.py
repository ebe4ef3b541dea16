"""`lakehouse replay` and `lakehouse verify` on a live stack: the catalog replayed from
sequence 1 gives exactly the live views; the vectors stream replayed single-threaded gives the
same id sets and the same top-10 for 100 fixed queries; verify finds planted differences."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from lakehouse.devtools.bench.data import clustered
from lakehouse.devtools.stack import Stack
from lakehouse.ops.replay import CatalogFold
from lakehouse.ops.verify import CHECKSUM_SQL
from lakehouse.platform.streams import Record
from lakehouse.vectors.partition import Partition
from schemas.catalog import CatalogEvent, ChangeSummary, ColumnSpec, ObjectRef, RegisterRequest
from schemas.vectors import IndexSpec
from tests.test_vector_recovery import load

DIM, N, PARTS = 32, 6_000, 3


def csv(rows: int, offset: int = 0) -> bytes:
    lines = ["worker_id,name,state,rate"]
    lines += [
        f"{i},w{i},{'IL' if i % 3 else 'MO'},{i % 50}.5" for i in range(offset, offset + rows)
    ]
    return ("\n".join(lines) + "\n").encode()


pytestmark = [
    pytest.mark.slow,
    pytest.mark.stack(
        kinds=("catalog", "ingest", "query", "vectors"),
        overrides={"vectors": {"threads": 1, "snapshot_every": 1.0, "snapshot_min_changes": 500}},
    ),
]


def sql(stack: Stack, query: str) -> list[list[object]]:
    with stack.client() as c:
        r = c.post("/v1/sql", json={"sql": query})
        assert r.status_code == 200, r.text
        return r.json()["rows"]  # type: ignore[no-any-return]


def test_replay_and_verify(stack: Stack, tmp_path: Path) -> None:
    with stack.client() as c:
        for name, body in (("alpha", csv(300)), ("beta", csv(50)), ("alpha", csv(120, 1000))):
            assert c.post(f"/v1/ingest?name={name}", content=body).status_code == 200
        assert c.post("/v1/ingest?name=gamma", content=csv(10)).status_code == 200
        assert c.post("/v1/ingest?name=gamma&mode=append", content=csv(5, 10)).status_code == 200
        assert c.delete("/v1/catalog/beta").status_code == 200
        r = c.post("/v1/vectors/indexes", json={"name": "vec", "dim": DIM, "partitions": PARTS})
        assert r.status_code == 201
    data = clustered(N, DIM, centers=60)
    asyncio.run(load(stack, "vec", data, parts=PARTS))
    # Deletes and re-upserts exercise the id fold: v0..v99 deleted, v0..v9 back.
    with stack.client() as c:
        ids = [f"v{i}" for i in range(100)]
        r = c.request("DELETE", "/v1/vectors/indexes/vec/items", json={"ids": ids})
        assert r.status_code in (200, 202), r.text
        items = [{"id": f"v{i}", "vector": data[i].tolist()} for i in range(10)]
        assert c.post("/v1/vectors/indexes/vec/items", json={"items": items}).status_code in (
            200,
            202,
        )

    # verify: rebuilt == live, and the independently known state.
    expect = {
        "datasets": {"alpha": {"row_count": 120}, "gamma": {"row_count": 15}},
        "indexes": {"vec": {"count": N - 90}},
    }
    (tmp_path / "expect.json").write_text(json.dumps(expect))
    report = json.loads(stack.cli("verify", "--json", "--expect", str(tmp_path / "expect.json")))
    assert report["ok"], report["diffs"]
    assert sorted(report["datasets"]) == ["alpha", "gamma"]
    assert report["datasets"]["alpha"]["revision"] == 2
    # Every kept revision too, the live side through time travel (as_of): the replaced one
    # and the one an append extended.
    for name, counts in (("alpha", {"1": 300, "2": 120}), ("gamma", {"1": 10, "2": 15})):
        revisions = report["datasets"][name]["revisions"]
        assert {r: v["row_count"] for r, v in revisions.items()} == counts
        assert revisions["2"]["checksum"] == report["datasets"][name]["checksum"]
    assert report["indexes"]["vec"]["count"] == N - 90

    # Catalog from sequence 1 into an isolated state: the live views, exactly.
    out = tmp_path / "catalog-state"
    summary = json.loads(stack.cli("replay", "catalog", "--into", str(out), "--json"))
    assert summary["messages"] == 6 and summary["range"][0] == 1
    assert summary["state"]["datasets"] == ["alpha", "gamma"]
    history = json.loads((out / "catalog.json").read_text())["history"]
    assert history == {"alpha": [1, 2], "beta": [1, 2], "gamma": [1, 2]}
    with duckdb.connect(str(out / "views.duckdb"), read_only=True) as db:
        for name in ("alpha", "gamma"):
            rebuilt = db.execute(CHECKSUM_SQL.format(src=name)).fetchone()
            assert rebuilt is not None
            [[n, h]] = sql(stack, CHECKSUM_SQL.format(src=name))
            assert (int(rebuilt[0]), str(rebuilt[1])) == (n, h)
            assert db.execute(f"SELECT * FROM {name} ORDER BY worker_id").fetchall() == [
                tuple(r) for r in sql(stack, f"SELECT * FROM {name} ORDER BY worker_id")
            ]
        tables = {
            r[0]
            for r in db.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
        assert tables == {"alpha", "gamma"}

    # Vectors, single-threaded, into an isolated state: same ids, same top-10 as live.
    out = tmp_path / "vector-state"
    summary = json.loads(stack.cli("replay", "vectors", "--into", str(out), "--json"))
    rebuilt = json.loads((out / "vectors.json").read_text())["vec"]
    assert sum(p["count"] for p in rebuilt.values()) == N - 90
    spec = IndexSpec(name="vec", dim=DIM, partitions=PARTS)
    parts = []
    for p in range(PARTS):
        d = out / "vectors" / "vec" / str(p)
        parts.append(Partition.load(spec, p, d / "index.hnsw", d / "ids.parquet", threads=1))
    queries = clustered(100, DIM, centers=60, sample=5)
    with stack.client() as c:
        for q in queries:
            hits = [h for part in parts for h in part.search(q, 10)]
            mine = [i for i, _, _ in sorted(hits, key=lambda h: h[1])[:10]]
            r = c.post("/v1/vectors/indexes/vec/search", json={"vector": q.tolist(), "k": 10})
            assert [h["id"] for h in r.json()["hits"]] == mine

    # Live replay of a range of vector batches: idempotent, verify still clean.
    result = json.loads(
        stack.cli(
            "replay", "vectors", "--from-seq", "2", "--to-seq", "4", "--into", "live", "--json"
        )
    )
    assert result["messages"] == 3
    assert json.loads(stack.cli("verify", "--json"))["ok"]

    # Refusals and planted differences.
    err = stack.cli("replay", "catalog", "--into", "live", rc=2)
    assert "refusing" in err and "old revisions current" in err
    (tmp_path / "wrong.json").write_text(json.dumps({"datasets": {"alpha": {"row_count": 121}}}))
    text = stack.cli("verify", "--expect", str(tmp_path / "wrong.json"), rc=1)
    assert "dataset alpha row_count: expected 121, live 120" in text
    # An old revision whose object is gone (as gc collects it) is skipped, not a difference.
    root = stack.settings.data_dir / "objects"
    with stack.client() as c:
        first = c.get("/v1/catalog/alpha/history").json()["events"][0]["manifest"]
    (root / first["objects"][0]["key"]).unlink()
    manifest = json.loads(stack.cli("verify", "--json"))
    assert manifest["ok"], manifest["diffs"]
    assert manifest["datasets"]["alpha"]["collected"] == [1]
    assert sorted(manifest["datasets"]["alpha"]["revisions"]) == ["2"]
    victim = next(iter(sorted((root / "datasets").rglob("*.parquet"))))
    victim.unlink()
    text = stack.cli("verify", rc=1)
    assert "DIFF" in text and victim.name in text


def test_verify_names_the_partition_that_differs(stack: Stack) -> None:
    """The log loses a batch the live worker already applied: verify reports the partition."""
    with stack.client() as c:
        r = c.post("/v1/vectors/indexes", json={"name": "lost", "dim": DIM, "partitions": PARTS})
        assert r.status_code == 201
    data = clustered(900, DIM, centers=30)
    asyncio.run(load(stack, "lost", data, parts=PARTS))
    assert json.loads(stack.cli("verify", "--json"))["ok"]

    async def drop_first_batch() -> None:
        import nats

        nc = await nats.connect(stack.nats.url)
        js = nc.jetstream()
        msg = await js.get_msg("LAKEHOUSE_VECTORS", 1)
        await js.delete_msg("LAKEHOUSE_VECTORS", msg.seq or 1)
        await nc.close()

    asyncio.run(drop_first_batch())
    text = stack.cli("verify", rc=1)
    assert "index lost partition" in text and "ids" in text


def test_catalog_fold_checks_each_event_against_the_state_before_it() -> None:
    """Events made by the catalog worker's own code fold without errors, and the fold keeps
    the last N revisions (none once deleted); planted inconsistencies are each named."""
    from workers.catalog import CatalogWorker

    def obj(key: str, rows: int) -> ObjectRef:
        return ObjectRef(key=key, size=100 + rows, rows=rows)

    cols = [ColumnSpec(name="id", type="int64", nullable=False)]

    def register(mode: str, objects: list[ObjectRef], **kw: Any) -> RegisterRequest:
        return RegisterRequest(
            request_id=f"r{len(events)}",
            name="ds",
            schema_fingerprint="fp",
            columns=cols,
            objects=objects,
            mode=mode,  # type: ignore[arg-type]
            **kw,
        )

    events: list[CatalogEvent] = []

    def add(req: RegisterRequest) -> CatalogEvent:
        last = events[-1] if events else None
        cur = last.manifest if last is not None and last.type == "registered" else None
        events.append(CatalogWorker.next_registration(req, cur, last.revision if last else 0))
        return events[-1]

    add(register("replace", [obj("o1", 10)]))
    change = ChangeSummary(mode="upsert", inserted=1, updated=2, deleted=1)
    add(register("upsert", [obj("o2", 3)], key="id", deletes=[obj("d2", 3)], base_revision=1,
                 change=change))  # fmt: skip
    add(register("append", [obj("o3", 5)]))
    add(register("compact", [obj("o4", 15)], base_revision=3))
    events.append(
        CatalogEvent(type="deleted", name="ds", revision=5, at=events[-1].at, replaced_objects=[])
    )
    add(register("replace", [obj("o5", 7)]))
    assert [e.manifest.row_count for e in events if e.manifest] == [10, 10, 15, 15, 7]

    def folded(evs: list[CatalogEvent], keep: int = 2) -> CatalogFold:
        cat = CatalogFold(keep)
        for seq, e in enumerate(evs, 1):
            cat.apply(Record(seq, "lakehouse.catalog.events.ds", e.model_dump_json().encode(), {}))
        return cat

    assert folded(events[:4]).errors == []
    assert list(folded(events[:4]).revisions("ds")) == [3, 4]
    assert list(folded(events[:4], keep=5).revisions("ds")) == [1, 2, 3, 4]
    whole = folded(events)
    assert whole.errors == [] and list(whole.revisions("ds")) == [6]
    assert whole.history == {"ds": [1, 2, 3, 4, 5, 6]}
    assert folded(events[2:]).errors == []  # a range starting mid-stream: nothing to compare

    def planted(i: int, **manifest: Any) -> list[str]:
        bad = [*events]
        m = bad[i].manifest
        assert m is not None
        bad[i] = bad[i].model_copy(update={"manifest": m.model_copy(update=manifest)})
        return folded(bad).errors

    first, then = planted(1, row_count=11)  # the append after it no longer adds up either
    assert first.startswith("seq 2: dataset ds revision 2: upsert: row count 11 != 10 before")
    assert then.startswith("seq 3: dataset ds revision 3: append: row count 15 != 11 before")
    [err] = planted(1, objects=events[1].manifest.objects[1:])  # type: ignore[union-attr]
    assert "upsert dropped objects ['o1']" in err
    [err] = planted(2, objects=events[2].manifest.objects[1:])  # type: ignore[union-attr]
    assert "append dropped objects ['o1']" in err
    [err] = planted(3, deletes=[obj("d2", 3)])
    assert "compaction left 1 delete set(s)" in err
    [err] = planted(3, row_count=14)
    assert "compaction changed the row count 15 -> 14" in err
    [err] = folded([events[0], events[2]]).errors
    assert err == "seq 2: dataset ds revision 3: follows revision 1 (expected 2)"
