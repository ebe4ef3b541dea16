"""Object storage: one interface, ``file://`` and ``s3://`` backends.

Keys follow the seed's storaged rules (see :func:`validate_key`). Writes are atomic and
streamed; reads are streamed. ``list`` is capped (default 10,000) with an explicit
``truncated`` flag. ``keys``: every key prefix and shape; ``parts`` and ``growing``: an upload
staged in parts, read as one file while it arrives.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.platform.errors import BadRequest

if TYPE_CHECKING:
    from lakehouse.platform.config import Settings

MAX_KEY_BYTES = 1024
LIST_LIMIT = 10_000
READ_CHUNK = 1 << 20


def validate_key(key: str) -> str:
    """Reject keys the seed's storaged rejects: empty, > 1024 bytes, NUL, leading ``/``,
    any ``..`` segment, CR/LF/tab. Returns the key unchanged when valid."""
    if not key:
        raise BadRequest("object key is empty", error="invalid key")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise BadRequest(f"object key is longer than {MAX_KEY_BYTES} bytes", error="invalid key")
    for ch, name in (("\x00", "NUL"), ("\r", "CR"), ("\n", "LF"), ("\t", "tab")):
        if ch in key:
            raise BadRequest(f"object key contains a {name} character", error="invalid key")
    if key.startswith("/"):
        raise BadRequest("object key must not start with '/'", error="invalid key")
    if ".." in key.split("/"):
        raise BadRequest("object key must not contain a '..' segment", error="invalid key")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class Listing:
    objects: list[ObjectInfo]
    truncated: bool


async def iter_bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def blocks(
    chunks: AsyncIterable[bytes], size: int, max_bytes: int | None = None
) -> AsyncIterator[bytes]:
    """The upload loop every backend shares: re-cut a streamed body into blocks of ``size``
    bytes (the last one shorter; none for an empty body), raising TooLarge as soon as more
    than ``max_bytes`` have arrived, so nothing over the cap is ever stored."""
    from lakehouse.platform.errors import TooLarge

    buf = bytearray()
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            raise TooLarge(f"body exceeds the {max_bytes}-byte limit")
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


class Storage(abc.ABC):
    """The storage interface every backend implements."""

    url: str

    @abc.abstractmethod
    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int | None = None,
        sync: bool = True,
    ) -> ObjectInfo:
        """Store the streamed body atomically. Over ``max_bytes`` -> TooLarge, nothing stored.
        ``sync=False`` skips the fsync before the object becomes visible (for transient
        objects such as staged uploads: a process crash still loses nothing, only an OS crash
        within the page-cache flush interval can)."""

    @abc.abstractmethod
    async def open(self, key: str) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """Stat the object and return a stream of its bytes. Missing -> NotFound."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Size and modification time. Missing -> NotFound."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Delete; deleting a missing key is not an error."""

    @abc.abstractmethod
    async def list(self, prefix: str = "", limit: int = LIST_LIMIT) -> Listing:
        """Objects under ``prefix`` in key order, at most ``limit``."""

    async def exists(self, key: str) -> bool:
        from lakehouse.platform.errors import NotFound

        try:
            await self.stat(key)
        except NotFound:
            return False
        return True

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (listing again until none is left); returns
        how many were deleted."""
        deleted = 0
        while objects := (await self.list(prefix)).objects:
            for obj in objects:
                await self.delete(obj.key)
            deleted += len(objects)
        return deleted

    async def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return await self.put(key, iter_bytes(data))

    async def get_bytes(self, key: str) -> bytes:
        _, body = await self.open(key)
        return b"".join([chunk async for chunk in body])

    async def put_file(self, key: str, path: Path) -> ObjectInfo:
        return await self.put(key, _file_chunks(path))

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        info, body = await self.open(key)
        with path.open("wb") as fh:
            async for chunk in body:
                await asyncio.to_thread(fh.write, chunk)
        return info

    def local_path(self, key: str) -> Path | None:
        """The object's file when the backend keeps objects on this machine, else None."""
        return None

    async def readable_path(self, key: str, cache: Path) -> Path:
        """A local file holding the object: the backend's own file, or a copy under ``cache``
        (objects are immutable, so a copy once made stays valid)."""
        local = self.local_path(key)
        if local is not None:
            return local
        path = cache / key
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            await self.get_file(key, tmp)
            tmp.replace(path)
        return path

    async def close(self) -> None:
        return None


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, READ_CHUNK):
            yield chunk


def open_storage(settings: Settings) -> Storage:
    """The backend named by ``settings.storage_url``."""
    url = settings.storage_url
    if url.startswith("file://"):
        from lakehouse.platform.storage.file import FileStorage

        return FileStorage(Path(url[len("file://") :]))
    if url.startswith("s3://"):
        from lakehouse.platform.storage.s3 import S3Storage

        return S3Storage.from_settings(settings)
    raise ValueError(f"unsupported storage URL {url!r}: use file://DIR or s3://BUCKET")
