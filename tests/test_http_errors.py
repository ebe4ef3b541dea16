"""One error shape over HTTP and NATS: 400 for every invalid request, ``Allow`` on a 405,
``Retry-After`` on a 503, and a 500 that never carries an exception's text (the gateway's
own, relayed from a worker's reply, or reported by a job that gave up)."""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from nats.aio.msg import Msg
from pydantic import BaseModel

from gateway import errors
from gateway.app import create_app
from lakehouse.devtools.testing import Harness
from lakehouse.platform.bus import ConsumerSpec, StreamSpec, provision
from lakehouse.platform.errors import Busy, LakehouseError, Permanent
from lakehouse.platform.runtime import Consume, Serve, Worker
from schemas import subjects as S

SECRET = "password=hunter2 in /srv/private/path"


class Body(BaseModel):
    n: int


def client() -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/things/{name}")
    async def get_thing(name: S.Name) -> dict[str, str]:
        return {"name": name}

    @app.delete("/things/{name}")
    async def delete_thing(name: S.Name) -> dict[str, str]:
        return {"name": name}

    @app.post("/things")
    async def create_thing(body: Body) -> dict[str, int]:
        return {"n": body.n}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET)

    @app.get("/busy")
    async def busy() -> None:
        raise Busy("full", retry_after=7)

    return TestClient(app, raise_server_exceptions=False)


def test_invalid_requests_are_400_naming_each_field() -> None:
    with client() as c:
        r = c.get("/things/bad.name")
        assert r.status_code == 400
        assert r.json()["error"] == "invalid request"
        assert r.json()["detail"][0]["loc"] == ["path", "name"]
        r = c.post("/things", json={"n": "x"})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["body", "n"]


def test_405_allows_every_method_of_the_path() -> None:
    with client() as c:
        r = c.put("/things/a")
        assert r.status_code == 405
        assert r.headers["allow"] == "DELETE, GET"
        assert r.json()["error"] == "method not allowed"
        assert c.request("OPTIONS", "/things").headers["allow"] == "POST"


def test_gateway_500_and_503() -> None:
    with client() as c:
        r = c.get("/boom")
        assert r.status_code == 500
        assert r.json()["error"] == "internal error"
        assert "hunter2" not in r.text and "RuntimeError" not in r.text
        assert re.search(r"incident [0-9a-f]{12}", r.json()["detail"])
        r = c.get("/busy")
        assert r.status_code == 503 and r.headers["retry-after"] == "7"


def test_the_openapi_document_has_no_422_and_every_error_has_the_error_shape() -> None:
    doc = create_app().openapi()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            responses = op["responses"]
            assert "422" not in responses, where
            if path.startswith("/v1/"):
                assert "500" in responses, where
                takes_input = op.get("parameters") or op.get("requestBody")
                assert not takes_input or "400" in responses, where
            for status, response in responses.items():
                if int(status) >= 400 and path.startswith("/v1/"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, where
                if status == "503":
                    assert "Retry-After" in response["headers"], where


FAILING_STREAM = StreamSpec("FAILING", ("test.failing.work",), "failing worker", work_queue=True)


class Failing(Worker):
    """Fails every request and every message with an unexpected exception."""

    kind = "failing"
    failures: list[Permanent] = []

    def streams(self) -> list[StreamSpec]:
        return [FAILING_STREAM]

    def consumes(self) -> list[Consume]:
        spec = ConsumerSpec("FAILING", "failing", "test.failing.work", ack_wait=2.0)
        return [Consume(spec, self.fail)]

    def serves(self) -> list[Serve]:
        return [Serve("test.failing.rpc", self.fail_reply)]

    async def fail(self, msg: Msg) -> None:
        raise RuntimeError(SECRET)

    async def fail_reply(self, msg: Msg) -> bytes:
        raise RuntimeError(SECRET)

    async def dead_lettered(self, msg: Msg, failure: Permanent) -> None:
        Failing.failures.append(failure)


async def test_a_workers_unexpected_error_reaches_the_caller_without_its_text(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="lakehouse.rpc")
    async with harness.worker(Failing):
        with pytest.raises(LakehouseError) as info:
            await harness.request("test.failing.rpc", b"{}")
    exc = info.value
    assert (exc.status, exc.error) == (500, "internal error"), exc.detail
    assert "hunter2" not in str(exc.detail) and "RuntimeError" not in str(exc.detail)
    match = re.search(r"incident ([0-9a-f]{12})", str(exc.detail))
    assert match, exc.detail
    [record] = [r for r in caplog.records if getattr(r, "incident", None) == match[1]]
    assert record.exc_info is not None
    assert "hunter2" in "".join(traceback.format_exception(*record.exc_info))


async def test_a_job_that_gave_up_reports_no_exception_text(harness: Harness) -> None:
    Failing.failures.clear()
    await provision(harness.js, [FAILING_STREAM])
    await harness.publish("test.failing.work", b"{}", msg_id="one")
    rt = await harness.drain(Failing, workers={"max_deliver": 2})
    assert rt.outcomes["dead-lettered"] == 1
    [failure] = Failing.failures
    assert (failure.status, failure.error) == (500, "gave up after retries")
    assert "hunter2" not in failure.detail and "lakehouse dlq list failing" in failure.detail
    [letter] = await harness.dead_letters("failing")
    assert "hunter2" in letter.error  # the operator still sees it


def _names(doc: dict[str, Any]) -> set[str]:
    return {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}


def test_the_route_table() -> None:
    assert _names(create_app().openapi()) >= {
        "GET /v1/storage",
        "PUT /v1/storage/{key}",
        "GET /v1/storage/{key}",
        "DELETE /v1/storage/{key}",
        "GET /v1/catalog",
        "POST /v1/catalog",
        "GET /v1/catalog/{name}",
        "DELETE /v1/catalog/{name}",
        "GET /v1/catalog/{name}/history",
        "GET /v1/vectors/indexes",
        "POST /v1/vectors/indexes",
        "GET /v1/vectors/indexes/{name}",
        "DELETE /v1/vectors/indexes/{name}",
        "POST /v1/vectors/indexes/{name}/items",
        "DELETE /v1/vectors/indexes/{name}/items",
        "POST /v1/vectors/indexes/{name}/search",
    }
