"""The storage contract, run against both backends: file:// and a real S3 server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from lakehouse.devtools.servers import SeaweedS3
from lakehouse.platform.config import Settings
from lakehouse.platform.errors import BadRequest, NotFound, TooLarge
from lakehouse.platform.storage import Storage, open_storage, validate_key

BAD_KEYS = [
    "",
    "x" * 1025,
    "a\x00b",
    "/abs",
    "../up",
    "a/../b",
    "a/..",
    "cr\rkey",
    "lf\nkey",
    "tab\tkey",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_validate_key_rejects(key: str) -> None:
    with pytest.raises(BadRequest):
        validate_key(key)


@pytest.mark.parametrize("key", ["a", "a/b/c.parquet", "x" * 1024, "dots..in.name", "é/ü"])
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Storage:
    if request.param == "s3":
        seaweed: SeaweedS3 = request.getfixturevalue("seaweed")
        return open_storage(make_settings(backend="s3", seaweed=seaweed))
    return open_storage(make_settings())


async def chunks(n: int, size: int, fail_at: int | None = None) -> AsyncIterator[bytes]:
    for i in range(n):
        if fail_at is not None and i == fail_at:
            raise ConnectionError("client went away")
        yield bytes([i % 251]) * size


async def test_round_trip(store: Storage) -> None:
    info = await store.put_bytes("d/one.bin", b"hello")
    assert info.size == 5
    assert await store.get_bytes("d/one.bin") == b"hello"
    assert await store.exists("d/one.bin")
    assert (await store.stat("d/one.bin")).size == 5
    await store.put_bytes("d/one.bin", b"replaced")
    assert await store.get_bytes("d/one.bin") == b"replaced"
    await store.delete("d/one.bin")
    assert not await store.exists("d/one.bin")
    with pytest.raises(NotFound):
        await store.open("d/one.bin")
    await store.delete("d/one.bin")  # idempotent


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_rejected_by_every_operation(store: Storage, key: str) -> None:
    for op in (store.put_bytes(key, b"x"), store.stat(key), store.delete(key), store.open(key)):
        with pytest.raises(BadRequest):
            await op
    assert (await store.list("")).objects == []


async def test_list_prefix_order_and_truncation(store: Storage) -> None:
    keys = ["p/b", "p/a", "p/c/d", "p-x", "q/z", "p/a-b"]
    for k in keys:
        await store.put_bytes(k, k.encode())
    listing = await store.list("p/")
    assert [o.key for o in listing.objects] == ["p/a", "p/a-b", "p/b", "p/c/d"]
    assert not listing.truncated
    capped = await store.list("p", limit=3)
    # S3 orders by key bytes; SeaweedFS lists a directory's entries together. Either way the
    # cap holds and says so.
    assert len(capped.objects) == 3 and capped.truncated
    assert {o.key for o in capped.objects} < {"p-x", "p/a", "p/a-b", "p/b", "p/c/d"}
    everything = await store.list("p", limit=5)
    assert len(everything.objects) == 5 and not everything.truncated
    exact = await store.list("p/", limit=4)
    assert len(exact.objects) == 4 and not exact.truncated
    assert (await store.list("nothing/")).objects == []


async def test_streamed_multipart_round_trip(store: Storage, tmp_path: Path) -> None:
    # 12 MiB in 256 KiB chunks: three 5 MiB parts on S3 (multipart), buffered writes on file.
    info = await store.put("big/blob", chunks(48, 256 * 1024))
    assert info.size == 12 << 20
    out = tmp_path / "blob"
    await store.get_file("big/blob", out)
    data = out.read_bytes()
    assert len(data) == 12 << 20
    assert data[: 256 * 1024] == b"\x00" * (256 * 1024)
    assert data[-1] == 47 % 251


async def test_over_limit_stores_nothing(store: Storage) -> None:
    with pytest.raises(TooLarge):
        await store.put("cap/x", chunks(30, 256 * 1024), max_bytes=6 << 20)
    assert not await store.exists("cap/x")
    assert (await store.list("")).objects == []


async def test_failed_upload_leaves_old_object_and_no_partial(store: Storage) -> None:
    await store.put_bytes("keep/x", b"original")
    with pytest.raises(ConnectionError):
        await store.put("keep/x", chunks(40, 256 * 1024, fail_at=30))
    assert await store.get_bytes("keep/x") == b"original"
    assert [o.key for o in (await store.list("")).objects] == ["keep/x"]


async def test_file_backend_leaves_no_temp_files(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    store = open_storage(settings)
    with pytest.raises(ConnectionError):
        await store.put("k", chunks(8, 1 << 20, fail_at=5))
    tmp = settings.data_dir / "objects" / ".lakehouse-tmp"
    assert list(tmp.iterdir()) == []
    with pytest.raises(BadRequest):
        await store.put_bytes(".lakehouse-tmp/x", b"1")
