"""Streaming request bodies: a raw body, or the file part of a multipart form, as chunks;
staging an upload for its ingest job (:func:`stage`: one object, or parts the job converts
while the rest arrives).

Nothing is buffered beyond the chunk (or part) in hand, so an upload of any size passes
through in bounded memory. A body whose declared ``Content-Length`` is over its cap is
refused before any of it is read (:func:`refuse_oversize`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from lakehouse.platform import metrics
from lakehouse.platform.errors import BadRequest, LakehouseError, TooLarge
from lakehouse.platform.storage import Storage, iter_bytes, keys, parts


def refuse_oversize(request: Request, cap: int, limit: str = "limit") -> None:
    """TooLarge (413) when the request declares a body over ``cap`` bytes (``limit``: how the
    cap is named in the message). A chunked body is counted as it streams instead."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise TooLarge(f"Content-Length {length} exceeds the {cap}-byte {limit}")


class _FilePart:
    """Multipart callbacks that keep the bytes of the first part named ``field`` (or the
    first part with a filename)."""

    def __init__(self, field: str) -> None:
        self.field = field.encode()
        self.header_name = b""
        self.header_value = b""
        self.in_file = False
        self.state = "before"  # before -> inside -> done
        self.out: list[bytes] = []

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value_cb,
            "on_header_end": self.header_end,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self.in_file = False

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition" and self.state == "before":
            _, disp = parse_options_header(self.header_value)
            self.in_file = disp.get(b"name") == self.field or b"filename" in disp
        self.header_name, self.header_value = b"", b""

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.state = "inside"
            self.out.append(data[start:end])

    def part_end(self) -> None:
        if self.in_file:
            self.state = "done"
            self.in_file = False

    def take(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data


async def upload_body(request: Request, field: str = "file") -> AsyncIterator[bytes]:
    """The uploaded bytes: the ``field`` part of multipart/form-data, else the raw body
    (counted in ``lakehouse_upload_bytes_total`` by route)."""
    route = metrics.route_of(request.scope)
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        async for chunk in request.stream():
            metrics.uploaded(route, len(chunk))
            yield chunk
        return
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart body without a boundary", error="invalid upload")
    part = _FilePart(field)
    parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
    async for chunk in request.stream():
        parser.write(chunk)
        if part.out:
            data = part.take()
            metrics.uploaded(route, len(data))
            yield data
    parser.finalize()
    if part.out:
        data = part.take()
        metrics.uploaded(route, len(data))
        yield data
    if part.state == "before":
        raise BadRequest(f"the multipart form has no {field!r} file part", error="invalid upload")


JOB_END_GRACE = 5.0  # seconds a failed part write waits to learn that its job has ended


class JobEnded(Exception):
    """The job ended (it failed) while its upload was still arriving."""


@dataclass(frozen=True)
class Staged:
    key: str  # the staged CSV, or the prefix of its parts
    parts: bool
    size: int  # bytes stored (with parts: by the time the job was started)


async def stage(
    storage: Storage,
    job_id: str,
    chunks: AsyncIterable[bytes],
    *,
    cap: int,
    part_bytes: int,
    start: Callable[[Staged], Awaitable[None]],
    ended: asyncio.Event | None = None,
) -> Staged:
    """Store an upload under ``staging/`` and have its job ``start`` as early as it can.

    An upload no larger than ``part_bytes`` (or any, with 0) is one object; ``start`` is
    called once it is stored. A larger one is stored in parts of ``part_bytes``: ``start``
    is called once the first part is stored, so the job converts the parts while the rest
    arrives; ``end`` follows the last part. When the upload fails after its job started,
    ``end`` names the error (the job fails with it); the error is raised here either way and
    nothing of a job that never started is kept. When ``ended`` is set while parts are stored
    (the job failed early, e.g. on its header, and deleted what was stored: a part written
    meanwhile may fail), the rest is read but not stored, the parts are deleted and
    :class:`JobEnded` raised."""
    ended = ended or asyncio.Event()

    async def one_object(body: AsyncIterable[bytes]) -> Staged:
        key = keys.staged_csv(job_id)
        info = await storage.put(key, body, max_bytes=cap, sync=False)
        staged = Staged(key, False, info.size)
        await start(staged)
        return staged

    if part_bytes <= 0:
        return await one_object(chunks)
    cut = _Cutter(chunks, cap)
    first = b"".join([chunk async for chunk in cut.part(part_bytes)])  # decides which
    if not await cut.more():  # it fits in one part
        return await one_object(iter_bytes(first))
    prefix, started, n = keys.staged_parts(job_id), False, 0
    try:
        await storage.put(keys.upload_part(prefix, 0), iter_bytes(first), sync=False)
        del first
        await start(Staged(prefix, True, cut.total))
        started, n = True, 1
        while await cut.more():
            if not ended.is_set():
                try:
                    key = keys.upload_part(prefix, n)
                    await storage.put(key, cut.part(part_bytes), sync=False)
                    n += 1
                    continue
                except (TooLarge, ClientDisconnect, BadRequest):  # the body's own failure
                    raise
                except Exception:  # storage: the job may have failed and deleted the parts
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ended.wait(), JOB_END_GRACE)
                    if not ended.is_set():
                        raise
            # The job ended: read the rest unstored (a client reads its answer after sending).
            while await cut.more():
                async for _ in cut.part(part_bytes):
                    pass
            await storage.delete_prefix(prefix)
            raise JobEnded(job_id)
        end = parts.end_record(n, cut.total)
        await storage.put(keys.upload_end(prefix), iter_bytes(end))
    except JobEnded:
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):
            if started:  # the job fails with the reason (and deletes the parts)
                why = f"the upload failed after {cut.total} bytes: {upload_error(exc)}"
                await storage.put(keys.upload_end(prefix), iter_bytes(parts.failed_record(why)))
            else:
                await storage.delete_prefix(prefix)
        raise
    return Staged(prefix, True, cut.total)


class _Cutter:
    """A streamed body cut into parts that stream too (only the chunk in hand is held);
    TooLarge as soon as more than ``cap`` bytes arrived."""

    def __init__(self, chunks: AsyncIterable[bytes], cap: int) -> None:
        self.chunks = aiter(chunks)
        self.cap = cap
        self.carry = b""
        self.total = 0  # bytes received

    async def more(self) -> bool:
        """Whether any byte is left (reads the next chunk when none is in hand)."""
        while not self.carry:
            chunk = await anext(self.chunks, None)
            if chunk is None:
                return False
            self.total += len(chunk)
            if self.total > self.cap:
                raise TooLarge(f"body exceeds the {self.cap}-byte limit")
            self.carry = chunk
        return True

    async def part(self, size: int) -> AsyncIterator[bytes]:
        """The next ``size`` bytes (fewer at the end of the body), as they arrive."""
        left = size
        while left and await self.more():
            chunk, self.carry = self.carry[:left], self.carry[left:]
            left -= len(chunk)
            yield chunk


def upload_error(exc: BaseException) -> str:
    """What a job may say about its upload's failure: our own errors' text, else the type."""
    if isinstance(exc, LakehouseError):
        return str(exc.detail)
    return "the client went away" if isinstance(exc, ClientDisconnect) else type(exc).__name__
