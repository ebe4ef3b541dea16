"""Prometheus metrics on real processes: the gateway's ``/metrics`` and each worker's own port
(from ``/health``) answer, and their counters move with an ingest, a SQL query and vectors;
``lakehouse status`` shows the same consumers, metrics ports and partition owners."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from schemas import subjects as S

KINDS = ("catalog", "ingest", "query", "vectors")
CSV = b"id,name,score\n1,Alice,1.5\n2,Bob,2.5\n3,Carol,3.5\n"

Samples = list[tuple[str, dict[str, str], float]]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def scrape(http: httpx.Client, url: str) -> Samples:
    r = http.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(series(samples, name, **labels))


def series(samples: Samples, name: str, **labels: str) -> list[float]:
    """The values of the samples named ``name`` whose labels include ``labels``."""
    return [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]


def test_every_process_exports_metrics_that_move_with_work(
    make_stack: Callable[..., Stack], http: httpx.Client
) -> None:
    stack = make_stack(KINDS)
    health = stack.health()
    assert health is not None
    ports: dict[str, int] = {}
    for kind in KINDS:
        (instance,) = health["workers"][kind]["instances"]
        ports[kind] = instance["metrics_port"]
    assert len(set(ports.values())) == len(KINDS), ports  # one exporter per process

    def scrape_all() -> dict[str, Samples]:
        got = {k: scrape(http, f"http://127.0.0.1:{p}/metrics") for k, p in ports.items()}
        return {**got, "gateway": scrape(http, f"{stack.base}/metrics")}

    before = scrape_all()
    for kind in KINDS:
        assert value(before[kind], "lakehouse_worker_info", kind=kind) == 1
    ds, index = f"m_{uuid.uuid4().hex[:8]}", f"ix_{uuid.uuid4().hex[:8]}"
    with stack.client() as c:
        r = c.post(f"/v1/ingest?name={ds}", files={"file": ("m.csv", CSV, "text/csv")})
        assert r.status_code == 200, r.text
        r = c.post("/v1/sql", json={"sql": f"SELECT sum(score) FROM {ds}"})
        assert r.status_code == 200 and r.json()["rows"] == [[7.5]], r.text
        r = c.post("/v1/vectors/indexes", json={"name": index, "dim": 2, "partitions": 2})
        assert r.status_code == 201, r.text
        items = [{"id": f"v{i}", "vector": [1.0, float(i)]} for i in range(5)]
        r = c.post(f"/v1/vectors/indexes/{index}/items", json={"items": items})
        assert r.status_code == 202, r.text

    # The vector worker exports its partitions' sizes at each balance turn (~2 s).
    def vectors_counted() -> Samples:  # [] (falsy) until the 5 vectors are counted
        got = scrape(http, f"http://127.0.0.1:{ports['vectors']}/metrics")
        return got if value(got, "lakehouse_vector_partition_vectors", index=index) == 5 else []

    vec = wait_until(vectors_counted, timeout=30, interval=0.2, what="5 vectors exported")
    after = {**scrape_all(), "vectors": vec}

    def moved(kind: str, name: str, **labels: str) -> float:
        return value(after[kind], name, **labels) - value(before[kind], name, **labels)

    # Workers: the ingest consumer acked the job, catalog registered it, query answered.
    assert moved("ingest", "lakehouse_messages_total", subject=S.INGEST_REQUESTS, outcome="acked")
    assert moved("ingest", "lakehouse_handler_seconds_count", subject=S.INGEST_REQUESTS) >= 1
    assert moved("catalog", "lakehouse_messages_total", subject=S.CATALOG_REGISTER, outcome="ok")
    assert moved("query", "lakehouse_messages_total", subject=S.QUERY_SQL, outcome="ok") >= 1
    assert moved("query", "lakehouse_handler_seconds_count", subject=S.QUERY_SQL) >= 1
    assert value(after["ingest"], "lakehouse_in_flight", kind="ingest") == 0
    for gauge in ("lakehouse_consumer_pending", "lakehouse_consumer_ack_pending"):
        # refreshed every 5 s from consumer info: present, its value a moment's
        assert len(series(after["ingest"], gauge, kind="ingest", consumer="ingest")) == 1, gauge
    owners = {lab["owner"] for n, lab, _ in vec if n == "lakehouse_vector_partition_vectors"}
    (vectors_instance,) = health["workers"]["vectors"]["instances"]
    assert owners == {vectors_instance["instance"]}
    # Gateway: requests by route template and status, the uploaded file's bytes exactly.
    ingest_ok = {"method": "POST", "route": "/v1/ingest", "status": "200"}
    assert moved("gateway", "lakehouse_http_requests_total", **ingest_ok) == 1
    assert moved("gateway", "lakehouse_http_requests_total", route="/v1/sql", status="200") == 1
    assert moved("gateway", "lakehouse_http_request_seconds_count", route="/v1/sql") == 1
    assert moved("gateway", "lakehouse_upload_bytes_total", route="/v1/ingest") == len(CSV)
    items_route = "/v1/vectors/indexes/{name}/items"  # the template, never the index's name
    assert moved("gateway", "lakehouse_http_requests_total", route=items_route) == 1

    # `lakehouse status`: each kind, its consumers' lag, the metrics ports, partition owners.
    with ThreadPoolExecutor(2) as pool:  # two CLI processes at once: each imports for ~1 s
        as_text, as_json = (
            pool.submit(stack.cli, "status"),
            pool.submit(stack.cli, "status", "--json"),
        )
        text, status = as_text.result(), json.loads(as_json.result())
    for kind in KINDS:
        assert f"{kind}: 1 replica(s)" in text, text
        assert f"metrics :{ports[kind]}" in text, text
    assert f"consumer {S.STREAM_INGEST}/ingest  pending 0" in text, text
    assert f"{index}.0  owner {vectors_instance['instance']}" in text, text
    (ingest_consumer,) = status["kinds"]["ingest"]["consumers"]
    assert ingest_consumer["pending"] == 0
    assert status["kinds"]["query"]["instances"][0]["metrics_port"] == ports["query"]
    assert {(p["index"], p["partition"]) for p in status["partitions"]} >= {(index, 0), (index, 1)}
