"""``file://DIR`` backend: objects are files under DIR, written to a temp file then renamed."""

from __future__ import annotations

import asyncio
import errno
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from lakehouse.platform.errors import BadRequest, Conflict, NotFound
from lakehouse.platform.storage import (
    LIST_LIMIT,
    READ_CHUNK,
    Listing,
    ObjectInfo,
    Storage,
    blocks,
    validate_key,
)

TMP_DIR = ".lakehouse-tmp"
WRITE_BUFFER = 1 << 20


class FileStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = f"file://{self.root}"
        self.tmp = self.root / TMP_DIR
        self.tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        validate_key(key)
        if key == TMP_DIR or key.startswith(TMP_DIR + "/"):
            raise BadRequest(f"keys under {TMP_DIR}/ are reserved", error="invalid key")
        if key.endswith("/") or "//" in key or "." in key.split("/"):
            raise BadRequest("object key has an empty or '.' segment", error="invalid key")
        return self.root / key

    def _info(self, key: str, path: Path) -> ObjectInfo:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no object {key!r}") from None
        if not path.is_file():
            raise NotFound(f"no object {key!r}")
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int | None = None,
        sync: bool = True,
    ) -> ObjectInfo:
        path = self._path(key)
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        fh = await asyncio.to_thread(tmp.open, "wb")
        try:
            async for block in blocks(chunks, WRITE_BUFFER, max_bytes):
                await asyncio.to_thread(fh.write, block)
            await asyncio.to_thread(_flush_close, fh, sync)
            await asyncio.to_thread(_install, tmp, path)
        except BaseException:
            fh.close()
            tmp.unlink(missing_ok=True)
            raise
        return self._info(key, path)

    async def open(self, key: str) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        path = self._path(key)
        info = self._info(key, path)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"no object {key!r}") from None

        async def body() -> AsyncIterator[bytes]:
            try:
                while chunk := await asyncio.to_thread(fh.read, READ_CHUNK):
                    yield chunk
            finally:
                fh.close()

        return info, body()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def stat(self, key: str) -> ObjectInfo:
        return self._info(key, self._path(key))

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return
        # Remove now-empty parent directories up to the root.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    async def list(self, prefix: str = "", limit: int = LIST_LIMIT) -> Listing:
        return await asyncio.to_thread(self._list, prefix, limit)

    def _list(self, prefix: str, limit: int) -> Listing:
        # Walk only the directory that can hold the prefix, in sorted (key) order.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        out: list[ObjectInfo] = []
        if "/" in prefix and any(seg in ("", ".", "..") for seg in base.split("/")):
            # No key has such a segment (and "/etc" or "../.." must not leave the root).
            return Listing(out, False)
        start = self.root / base if base else self.root
        if not start.is_dir():
            return Listing(out, False)
        for key, path in _walk(start, base):
            if not key.startswith(prefix):
                if key > prefix:
                    break  # past the prefix range: keys come in order
                continue
            if key.startswith(TMP_DIR + "/"):
                continue
            if len(out) == limit:
                return Listing(out, True)
            try:
                out.append(self._info(key, path))
            except NotFound:
                continue  # deleted while listing
        return Listing(out, False)


def _walk(directory: Path, rel: str) -> Iterator[tuple[str, Path]]:
    """Files under ``directory`` as (key, path), in key (byte) order."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    # A directory sorts as its name plus "/", as its keys would.
    keyed = sorted(((e.name + ("/" if e.is_dir() else ""), e) for e in entries), key=lambda t: t[0])
    for name, entry in keyed:
        key = f"{rel}/{name}" if rel else name
        if entry.is_dir():
            yield from _walk(Path(entry.path), key.rstrip("/"))
        else:
            yield key, Path(entry.path)


def _flush_close(fh: BinaryIO, sync: bool = True) -> None:
    fh.flush()
    if sync:
        os.fsync(fh.fileno())
    fh.close()


def _install(tmp: Path, path: Path) -> None:
    # A concurrent delete (another process) prunes empty parent directories: it can remove
    # the one just created before the rename lands. Re-create and try again.
    for attempt in range(10):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
            return
        except FileNotFoundError:
            if not tmp.exists() or attempt == 9:
                raise
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            # Files are objects and directories are key prefixes: "a" and "a/b" cannot both
            # exist here (they can on S3).
            raise Conflict(
                "the key collides with another object's path (a key cannot be both an object "
                "and the prefix of another on the file backend)",
                error="key conflict",
            ) from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise BadRequest("a key segment is too long", error="invalid key") from None
            raise
