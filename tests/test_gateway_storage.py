"""Storage through a real gateway process, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from lakehouse.devtools.stack import Proc, project_env, serving
from lakehouse.platform.procs import free_port
from tests.conftest import settings_under


@pytest.fixture(scope="module", params=["file", "s3"])
def base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gateway per backend for the module's tests (each test uses keys of its own)."""
    root = tmp_path_factory.mktemp(f"gateway-{request.param}")
    seaweed = request.getfixturevalue("seaweed") if request.param == "s3" else None
    extra = {"gateway": {"max_put_bytes": 8 << 20, "max_concurrent_puts": 2}}
    settings = settings_under(root, backend=request.param, seaweed=seaweed, **extra)
    settings.gateway.port = free_port()
    proc = Proc(["gateway"], project_env(settings), root / "gateway.log")
    try:
        yield serving(proc, settings)
    finally:
        proc.stop()


async def test_round_trip_list_delete(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.put("/v1/storage/d2/sample.csv", content=b"id,name\n1,Alice\n")
        assert r.status_code == 200, r.text
        assert r.json()["size"] == 16
        r = await c.get("/v1/storage/d2/sample.csv")
        assert r.status_code == 200 and r.content == b"id,name\n1,Alice\n"
        r = await c.get("/v1/storage", params={"prefix": "d2/"})
        assert r.status_code == 200
        assert [o["key"] for o in r.json()["objects"]] == ["d2/sample.csv"]
        assert r.json()["truncated"] is False
        assert (await c.delete("/v1/storage/d2/sample.csv")).status_code == 204
        r = await c.get("/v1/storage/d2/sample.csv")
        assert r.status_code == 404
        assert r.json()["error"] == "not found"


async def test_an_object_named_list_is_an_object_like_any_other(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        assert (await c.put("/v1/storage/list", content=b"listed")).status_code == 200
        r = await c.get("/v1/storage/list")
        assert r.status_code == 200 and r.content == b"listed"
        r = await c.get("/v1/storage", params={"prefix": "li"})
        assert [o["key"] for o in r.json()["objects"]] == ["list"]
        assert (await c.delete("/v1/storage/list")).status_code == 204
        assert (await c.get("/v1/storage/list")).status_code == 404


@pytest.mark.parametrize(
    "raw",
    [
        "/v1/storage/a%0Ab",
        "/v1/storage/a/%2E%2E/b",
        "/v1/storage/x%09y",
        "/v1/storage/a//b",
        "/v1/storage/a/%2E/b",
        "/v1/storage/a/",
        "/v1/storage/%2Fa",
        "/v1/storage/",
        "/v1/storage/" + "k" * 256,
    ],
)
async def test_key_against_the_schema_is_400(base: str, raw: str) -> None:
    async with httpx.AsyncClient(base_url=base) as c:
        for r in (await c.put(raw, content=b"x"), await c.get(raw), await c.delete(raw)):
            assert r.status_code == 400, r.text
            assert r.json()["error"] == "invalid request"
            assert r.json()["detail"][0]["loc"] == ["path", "key"]


@pytest.mark.parametrize(
    "key",
    [
        "é" * 128,  # 128 characters, 256 bytes in one segment
        "/".join(["é" * 100] * 6),  # 605 characters, 1205 bytes
    ],
)
async def test_key_over_the_byte_limits_is_400_invalid_key(base: str, key: str) -> None:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.put(f"/v1/storage/{key}", content=b"x")
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid key"
        assert "bytes" in r.json()["detail"]


@pytest.mark.parametrize("prefix", ["/etc/", "../../../../etc/", "d3/../../../etc/"])
async def test_a_prefix_never_lists_outside_the_store(base: str, prefix: str) -> None:
    async with httpx.AsyncClient(base_url=base) as c:
        assert (await c.put("/v1/storage/d3/x", content=b"x")).status_code == 200
        r = await c.get("/v1/storage", params={"prefix": prefix})
        assert r.status_code == 200 and r.json()["objects"] == [], r.text


async def test_405_lists_the_methods_of_the_path(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/v1/storage/a")
        assert r.status_code == 405
        assert r.headers["allow"] == "DELETE, GET, PUT"
        assert r.json()["error"] == "method not allowed"
        assert (await c.delete("/v1/storage")).headers["allow"] == "GET"


async def test_over_cap_is_413_up_front_and_mid_stream(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        before = (await c.get("/v1/storage")).json()["objects"]  # the module shares a store
        r = await c.put("/v1/storage/big", content=b"x" * ((8 << 20) + 1))
        assert r.status_code == 413
        assert "limit" in r.json()["detail"]

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
            for _ in range(12):
                yield b"y" * (1 << 20)

        r = await c.put("/v1/storage/big", content=chunked())
        assert r.status_code == 413
        assert (await c.get("/v1/storage/big")).status_code == 404
        assert (await c.get("/v1/storage")).json()["objects"] == before


class Holder:
    """A PUT sent over a raw socket that stops half way, so its slot stays taken and an early
    response (503) can be seen while the body is still unsent."""

    def __init__(self, base: str, key: str) -> None:
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)
        self.key = key

    async def start(self) -> Holder:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"PUT /v1/storage/{self.key} HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n\r\n"
        self.writer.write(head.encode() + b"a" * 1024)
        await self.writer.drain()
        self.status = asyncio.create_task(self.reader.readline())
        return self

    async def finish(self) -> bytes:
        self.writer.write(b"b" * 1024)
        await self.writer.drain()
        line = await self.status
        self.writer.close()
        return line


async def test_concurrent_puts_over_limit_get_503_retry_after(base: str) -> None:
    holders = [await Holder(base, f"slot{i}").start() for i in range(2)]
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        # The limit is 2. Probe until both holders are inside the gateway; a holder that lost
        # the race to a probe (it got its 503 early) is sent again.
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            r = await c.put("/v1/storage/probe", content=b"z")
            if r.status_code == 503:
                break
            assert r.status_code == 200
            assert asyncio.get_running_loop().time() < deadline, "holders never got in"
            for i, h in enumerate(holders):
                if h.status.done():
                    assert b" 503 " in h.status.result()
                    h.writer.close()
                    holders[i] = await Holder(base, f"slot{i}").start()
            await asyncio.sleep(0.02)
        assert r.headers["retry-after"] == "5"
        assert r.json()["error"] == "busy"
        assert [await h.finish() for h in holders] == [b"HTTP/1.1 200 OK\r\n"] * 2
        assert (await c.put("/v1/storage/probe", content=b"z")).status_code == 200
        assert (await c.get("/v1/storage/slot0")).content == b"a" * 1024 + b"b" * 1024


async def test_unknown_route_is_404_json(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get("/v1/nope")
        assert r.status_code == 404
        assert r.json() == {"error": "not found", "detail": "no route GET /v1/nope"}
