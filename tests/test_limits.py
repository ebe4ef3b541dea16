"""The ``limits`` settings: each hit is a 4xx in the one error shape naming the limit and its
setting, never a 5xx. The gateway's own (JSON body, k, items, filter ids) in process, with
no NATS behind it; the SQL result's through a small real stack, which still answers after."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.filters import Filters, id_cap
from gateway.routes.search import K_CEILING
from lakehouse.devtools.stack import Stack
from lakehouse.platform.config import Settings
from lakehouse.platform.errors import BadRequest, TooLarge
from lakehouse.platform.procs import free_port
from lakehouse.tables.sqljson import table_rows
from schemas.query import SqlRequest
from schemas.vectors import IndexSpec, SearchRequest
from tests.conftest import settings_under
from workers.query import Result

SMALL = {"max_json_bytes": 1024, "max_k": 5, "max_items_per_add": 3}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The gateway in process, its NATS unreachable: a request past the limits gets 503."""
    root = tmp_path_factory.mktemp("limits")
    nats = {"url": f"nats://127.0.0.1:{free_port()}", "connect_timeout": 0.2}
    settings = settings_under(root, limits=SMALL, nats=nats)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def limit_hit(r: Any, status: int, detail: str) -> None:
    assert r.status_code == status, r.text
    assert r.json() == {"error": "limit exceeded", "detail": detail}


def test_k_and_items_over_their_limits_are_400s(client: TestClient) -> None:
    search = "/v1/vectors/indexes/people/search"
    r = client.post(search, json={"vector": [0.1, 0.2], "k": 50})
    limit_hit(r, 400, "k 50 is over the limit 5 (limits.max_k)")
    assert client.post(search, json={"vector": [0.1], "k": 5}).status_code == 503  # passed
    r = client.post(search, json={"vector": [0.1], "k": K_CEILING + 1})
    assert r.status_code == 400 and r.json()["error"] == "invalid request"  # the contract's
    assert K_CEILING == SearchRequest.model_json_schema()["properties"]["k"]["maximum"]
    items = [{"id": str(i), "text": "x"} for i in range(4)]
    r = client.post("/v1/vectors/indexes/people/items", json={"items": items})
    limit_hit(r, 400, "items 4 is over the limit 3 (limits.max_items_per_add); send them in parts")
    r = client.post("/v1/vectors/indexes/people/items", json={"items": items[:3]})
    assert r.status_code == 503


def test_json_bodies_over_the_limit_are_413s_declared_or_streamed(client: TestClient) -> None:
    big = json.dumps({"sql": "SELECT 1 -- " + "x" * 2000}).encode()
    r = client.post("/v1/sql", content=big, headers={"content-type": "application/json"})
    detail = f"JSON body of {len(big)} bytes is over the limit 1024 (limits.max_json_bytes)"
    limit_hit(r, 413, detail)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield from (big[i : i + 256] for i in range(0, len(big), 256))

    r = client.post("/v1/sql", content=chunks(), headers={"content-type": "application/json"})
    limit_hit(
        r, 413, "JSON body of more than 1024 bytes is over the limit 1024 (limits.max_json_bytes)"
    )
    small = json.dumps({"sql": "SELECT 1"}).encode()
    r = client.post("/v1/sql", content=iter([small]), headers={"content-type": "application/json"})
    assert r.status_code == 503  # under the limit: through to the route
    # The streamed uploads keep their own caps.
    assert client.put("/v1/storage/limits/big.bin", content=big).status_code == 200
    assert client.post("/v1/ingest?name=big", content=big).status_code == 503


def test_the_openapi_document_names_the_limits(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    said = "The JSON body is over `limits.max_json_bytes` (1024 bytes here)."
    sql = paths["/v1/sql"]["post"]["responses"]["413"]["description"]
    assert "limits.max_sql_result_bytes" in sql and sql.endswith(said)
    items = paths["/v1/vectors/indexes/{name}/items"]["post"]["responses"]
    assert items["413"]["description"] == said
    assert "limits.max_items_per_add" in items["400"]["description"]
    search = paths["/v1/vectors/indexes/{name}/search"]["post"]["responses"]["400"]
    assert "limits.max_k" in search["description"]
    assert "limits.max_filter_ids" in search["description"]
    assert "limits.max_json_bytes" not in json.dumps(paths["/v1/ingest"])


async def test_filter_ids_over_the_limit_are_400s(make_settings: Callable[..., Settings]) -> None:
    assert id_cap(make_settings()) == (2_000_000, "limits.max_filter_ids")
    lower = make_settings(limits={"max_filter_ids": 10}, query={"max_rows_arrow": 20})
    assert id_cap(lower) == (10, "limits.max_filter_ids")
    arrow = make_settings(limits={"max_filter_ids": 30}, query={"max_rows_arrow": 20})
    assert id_cap(arrow) == (20, "query.max_rows_arrow")
    asked: list[SqlRequest] = []

    async def run(req: SqlRequest) -> pa.Table:
        asked.append(req)
        return pa.table({"id": ["a"] * 10}).replace_schema_metadata({"lakehouse.truncated": "true"})

    spec = IndexSpec(name="people", dim=4, dataset="staff", id_column="id")
    with pytest.raises(BadRequest) as info:
        await Filters(1 << 20).ids(spec, "x = 1", 0, run, *id_cap(lower))
    assert info.value.error == "limit exceeded"
    assert info.value.detail == (
        "the filter matches more than 10 rows, over the limit 10 (limits.max_filter_ids); narrow it"
    )
    assert asked[0].max_rows == 10  # the query worker stops there


def test_sql_results_serialise_as_before_and_stop_past_the_limit() -> None:
    schema = pa.schema([("n", pa.int64()), ("s", pa.string())])
    batches = [
        pa.record_batch([list(range(i, i + 3)), ["é", None, "x"]], schema=schema) for i in (0, 3)
    ]
    types = ["BIGINT", "VARCHAR"]
    table = pa.Table.from_batches(batches)
    out = Result("json", schema, types, 1 << 20)
    for b in batches:
        out.add(b)
    before = {
        "columns": [{"name": "n", "type": "BIGINT"}, {"name": "s", "type": "VARCHAR"}],
        "rows": table_rows(table, types),
        "row_count": 6,
        "truncated": True,
    }
    assert out.finish(True) == json.dumps(before, ensure_ascii=False).encode()
    arrow = Result("arrow", schema, types, 1 << 20)
    for b in batches:
        arrow.add(b)
    back = pa.ipc.open_stream(pa.BufferReader(arrow.finish(False))).read_all()
    assert back.equals(table) and back.schema.metadata == {b"lakehouse.truncated": b"false"}
    tight = Result("json", schema, types, 40)
    tight.add(batches[0])
    with pytest.raises(
        TooLarge, match=r"of at least 64 bytes is over the limit 40 \(limits.max_sql_result_bytes\)"
    ):
        tight.add(batches[1])


def test_a_sql_result_over_the_limit_is_a_413_and_the_worker_answers_after(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(overrides={"limits": {"max_sql_result_bytes": 4096}})
    csv = "id,name\n" + "".join(f"{i},person number {i}\n" for i in range(300))
    with stack.client() as c:
        assert c.post("/v1/ingest?name=people", content=csv.encode()).status_code == 200
        for accept in ("application/json", "application/vnd.apache.arrow.stream"):
            r = c.post("/v1/sql", json={"sql": "SELECT * FROM people"}, headers={"accept": accept})
            assert r.status_code == 413, r.text
            assert r.json()["error"] == "limit exceeded"
            assert r.json()["detail"].startswith("SQL result of at least ")
            assert "over the limit 4096 (limits.max_sql_result_bytes)" in r.json()["detail"]
        r = c.post("/v1/sql", json={"sql": "SELECT count(*) AS n FROM people"})
        assert r.status_code == 200 and r.json()["rows"] == [[300]]
