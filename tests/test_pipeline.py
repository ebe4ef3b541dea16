"""The seed's G0 smoke (D1-D6) through the gateway on real NATS, on both storage backends:
ingest -> catalog -> SQL, idempotent re-ingest, schema drift, errors, read-your-writes."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from schemas.catalog import dataset_id

FIVE = (
    b"id,name,salary,active,score\n1,Alice,100,true,1.5\n2,Bob,200,FALSE,2.5\n"
    b"3,Carol,,True,\n4,Dan,400,false,4.25\n5,Eve,500,true,5\n"
)
DRIFT = b"id,name,salary\n1,Alice,x\n"


pytestmark = [
    pytest.mark.stack(
        overrides={
            "query": {"max_rows": 1000, "timeout": 3.0},
            "ingest": {"max_upload_bytes": 1 << 20},
        },
        shared=True,
    ),
    # Every test on both storage backends, one stack each.
    pytest.mark.parametrize("stack", ["file", "s3"], indirect=True, scope="module"),
]


def name() -> str:
    return f"ds_{uuid.uuid4().hex[:8]}"


def sql(stack: Stack, query: str) -> dict:  # type: ignore[type-arg]
    with stack.client() as c:
        r = c.post("/v1/sql", json={"sql": query})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_g0_smoke(stack: Stack) -> None:
    ds = name()
    with stack.client() as c:
        r = c.post(f"/v1/ingest?name={ds}", files={"file": ("w.csv", FIVE, "text/csv")})
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["row_count"] == 5 and first["existing"] is False
        assert first["dataset_id"] == dataset_id(ds)
        assert first["key"].startswith(f"datasets/{ds}/{first['fingerprint']}/")
        assert sql(stack, f"SELECT count(*) AS n FROM {ds}")["rows"] == [[5]]
        out = sql(stack, f"SELECT * FROM {ds} ORDER BY id")
        assert out["rows"][0][1] == "Alice"
        assert [c["name"] for c in out["columns"]] == ["id", "name", "salary", "active", "score"]
        assert [c["type"] for c in out["columns"]] == [
            "BIGINT",
            "VARCHAR",
            "BIGINT",
            "BOOLEAN",
            "DOUBLE",
        ]
        assert out["rows"][2] == [3, "Carol", None, True, None]

        r = c.post(f"/v1/ingest?name={ds}", content=FIVE, headers={"content-type": "text/csv"})
        assert r.status_code == 200, r.text
        again = r.json()
        assert again["existing"] is True and again["dataset_id"] == first["dataset_id"]
        assert again["key"] == first["key"]  # same content, same object

        r = c.post(f"/v1/ingest?name={ds}", content=DRIFT)
        assert r.status_code == 409, r.text
        assert first["fingerprint"] in r.json()["detail"]
        assert sql(stack, f"SELECT count(*) FROM {ds}")["rows"] == [[5]]  # old data still queries

        r = c.post("/v1/sql", json={"sql": "SELECT * FROM no_such_table"})
        assert r.status_code == 400 and "no_such_table" in r.json()["detail"]
        assert c.get("/v1/unknown").status_code == 404

        listed = c.get("/v1/catalog").json()["datasets"]
        assert ds in {m["name"] for m in listed}
        manifest = c.get(f"/v1/catalog/{ds}").json()
        assert manifest["row_count"] == 5 and manifest["revision"] == 2
        assert [o["key"] for o in manifest["objects"]] == [first["key"]]
        # nothing staged is left behind
        assert c.get("/v1/storage", params={"prefix": "staging/"}).json()["objects"] == []


def test_append_mode_and_history_and_delete(stack: Stack) -> None:
    ds = name()
    with stack.client() as c:
        assert c.post(f"/v1/ingest?name={ds}", content=FIVE).status_code == 200
        more = b"id,name,salary,active,score\n6,Fay,600,true,6.5\n"
        r = c.post(f"/v1/ingest?name={ds}&mode=append", content=more)
        assert r.status_code == 200, r.text
        assert r.json()["dataset_rows"] == 6
        assert sql(stack, f"SELECT count(*) FROM {ds}")["rows"] == [[6]]
        r = c.post(f"/v1/ingest?name={ds}&mode=append", content=DRIFT)
        assert r.status_code == 409
        history = c.get(f"/v1/catalog/{ds}/history").json()["events"]
        assert [e["revision"] for e in history] == [1, 2]
        assert c.delete(f"/v1/catalog/{ds}").status_code == 200
        r = c.post("/v1/sql", json={"sql": f"SELECT * FROM {ds}"})
        assert r.status_code == 400  # the view is gone
        assert c.get(f"/v1/catalog/{ds}").status_code == 404
        assert [e["type"] for e in c.get(f"/v1/catalog/{ds}/history").json()["events"]] == [
            "registered",
            "registered",
            "deleted",
        ]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty"),
        (b"a,b\n1,2\n3,4,5\n", "row 2"),
        (b"a,a\n1,2\n", "'a'"),
        (b"a,,c\n1,2,3\n", "column 2"),
        (b"a,b\n1,\xff\xfe\n", "UTF-8"),
    ],
)
def test_bad_csv_fails_precisely_and_leaves_nothing(stack: Stack, body: bytes, needle: str) -> None:
    ds = name()
    with stack.client() as c:
        r = c.post(f"/v1/ingest?name={ds}", content=body)
        assert r.status_code == 400, r.text
        assert needle in r.json()["detail"]
        assert c.get(f"/v1/catalog/{ds}").status_code == 404
        assert c.get("/v1/storage", params={"prefix": f"datasets/{ds}/"}).json()["objects"] == []
        assert c.get("/v1/storage", params={"prefix": "staging/"}).json()["objects"] == []


def test_bad_names_are_400(stack: Stack) -> None:
    with stack.client() as c:
        assert c.post("/v1/ingest?name=bad.name", content=FIVE).status_code == 400
        assert c.get("/v1/catalog/bad.name").status_code == 400


def test_read_your_writes_50_times(stack: Stack) -> None:
    ds = name()
    with stack.client() as c:
        for i in range(1, 51):
            body = b"id,v\n" + b"".join(b"%d,%d\n" % (j, i) for j in range(i))
            r = c.post(f"/v1/ingest?name={ds}", content=body)
            assert r.status_code == 200, r.text
            r = c.post("/v1/sql", json={"sql": f"SELECT count(*), max(v) FROM {ds}"})
            assert r.status_code == 200, r.text
            assert r.json()["rows"] == [[i, i]], f"iteration {i}"


ATTACKS = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/*')",
    "COPY (SELECT 1) TO '/tmp/lakehouse-attack.csv'",
    "ATTACH '/tmp/lakehouse-attack.db' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPORT DATABASE '/tmp/lakehouse-attack'",
    "SET threads = 1",
    "RESET threads",
    "PRAGMA version",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v2 AS SELECT 1",
    "DROP VIEW IF EXISTS x",
    "SELECT 1; SELECT 2",
    "CALL duckdb_settings()",
    "SELECT * FROM read_parquet('/etc/passwd')",
    "SELECT * FROM 'https://example.com/x.csv'",
    "SELECT * FROM read_blob('/etc/passwd')",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_sandbox_refuses(stack: Stack, attack: str) -> None:
    with stack.client() as c:
        r = c.post("/v1/sql", json={"sql": attack})
        assert r.status_code in (400, 403), (attack, r.status_code, r.text)
        assert r.json()["error"]
    assert not Path("/tmp/lakehouse-attack.csv").exists()
    assert not Path("/tmp/lakehouse-attack.db").exists()


def test_staged_uploads_are_not_readable_by_sql(stack: Stack) -> None:
    with stack.client() as c:
        c.put("/v1/storage/staging/secret.csv", content=b"a\n1\n")
        root = stack.settings.data_dir / "objects"
        r = c.post("/v1/sql", json={"sql": f"SELECT * FROM read_csv('{root}/staging/secret.csv')"})
        assert r.status_code in (400, 403)
        c.delete("/v1/storage/staging/secret.csv")


def test_json_types_are_exact(stack: Stack) -> None:
    out = sql(
        stack,
        "SELECT 1.10::DECIMAL(10,2) AS d, DATE '2024-01-02' AS dt, "
        "TIMESTAMP '2024-01-02 03:04:05.5' AS ts, INTERVAL '1 month 2 days 3 seconds' AS iv, "
        "'ab'::BLOB AS b, [1, 2] AS l, {'x': 1, 'y': 'z'} AS s, MAP {'k': 1} AS m, "
        "'nan'::DOUBLE AS n, 'inf'::DOUBLE AS i, '-inf'::DOUBLE AS ni, "
        "sum(x) AS h, NULL::INTEGER AS nn FROM (SELECT 1 AS x)",
    )
    assert out["rows"] == [
        [
            "1.10",
            "2024-01-02",
            "2024-01-02T03:04:05.500000",
            "P1M2DT3S",
            "YWI=",
            [1, 2],
            {"x": 1, "y": "z"},
            {"k": 1},
            "NaN",
            "Infinity",
            "-Infinity",
            1,
            None,
        ]
    ]
    assert out["columns"][0] == {"name": "d", "type": "DECIMAL(10,2)"}


def test_row_cap_and_arrow(stack: Stack) -> None:
    out = sql(stack, "SELECT * FROM range(5000)")
    assert out["row_count"] == 1000 and out["truncated"] is True
    with stack.client() as c:
        r = c.post(
            "/v1/sql",
            json={"sql": "SELECT 42 AS answer, 'x' AS s"},
            headers={"accept": "application/vnd.apache.arrow.stream"},
        )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(io.BytesIO(r.content)).read_all()
    assert table.to_pylist() == [{"answer": 42, "s": "x"}]


def test_statement_timeout_is_504_and_worker_stays_healthy(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post(
            "/v1/sql",
            json={
                "sql": "SELECT count(*) FROM range(1000000) a, range(1000000) b "
                "WHERE a.range + b.range = 7"
            },
        )
        assert r.status_code == 504, r.text
        assert "cancelled" in r.json()["detail"]
    assert sql(stack, "SELECT 1")["rows"] == [[1]]


def test_slow_ingest_answers_202_then_job_polls_to_success(stack: Stack) -> None:
    ds = name()
    body = b"id,v\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20000))
    with stack.client() as c:
        r = c.post(f"/v1/ingest?name={ds}&wait=0", content=body)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status_url"] == f"/v1/jobs/{job['job_id']}"

        def finished() -> dict | None:  # type: ignore[type-arg]
            state = c.get(job["status_url"]).json()
            return state if state["state"] in ("succeeded", "failed") else None

        state = wait_until(finished, timeout=60, interval=0.1, what="job to finish")
        assert state["state"] == "succeeded" and state["result"]["row_count"] == 20000
        assert state["progress_rows"] == 20000
        assert sql(stack, f"SELECT count(*) FROM {ds}")["rows"] == [[20000]]
        assert c.get("/v1/jobs/nope").status_code == 404


def test_upload_over_cap_is_413_and_leaves_nothing(stack: Stack) -> None:
    ds = name()
    big = b"id\n" + b"1\n" * (600 * 1024)  # 1.2 MiB, over the 1 MiB test cap
    with stack.client() as c:
        r = c.post(f"/v1/ingest?name={ds}", content=big)
        assert r.status_code == 413, r.text

        def chunks():  # type: ignore[no-untyped-def]
            for i in range(0, len(big), 65536):
                yield big[i : i + 65536]

        r = c.post(f"/v1/ingest?name={ds}", content=chunks())  # chunked: no Content-Length
        assert r.status_code == 413, r.text
        assert c.get("/v1/storage", params={"prefix": "staging/"}).json()["objects"] == []
        assert c.get(f"/v1/catalog/{ds}").status_code == 404


def test_a_bad_manifest_does_not_block_other_views(stack: Stack) -> None:
    ghost, good = name(), name()
    with stack.client() as c:
        r = c.post(
            "/v1/catalog",
            json={
                "name": ghost,
                "schema_fingerprint": "f" * 64,
                "columns": [{"name": "id", "type": "int64", "nullable": False}],
                "objects": [{"key": f"datasets/{ghost}/missing.parquet", "size": 1, "rows": 1}],
            },
        )
        assert r.status_code == 200, r.text
        assert c.post(f"/v1/ingest?name={good}", content=FIVE).status_code == 200
        assert sql(stack, f"SELECT count(*) FROM {good}")["rows"] == [[5]]
        assert c.post("/v1/sql", json={"sql": f"SELECT * FROM {ghost}"}).status_code == 400
        assert c.delete(f"/v1/catalog/{ghost}").status_code == 200
    assert "view update failed" in stack.logs()
