"""Streaming request bodies: a raw body, or the file part of a multipart form, as chunks.

Nothing is buffered beyond the chunk in hand, so an upload of any size passes through in
bounded memory. A body whose declared ``Content-Length`` is over its cap is refused before
any of it is read (:func:`refuse_oversize`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from lakehouse.platform import metrics
from lakehouse.platform.errors import BadRequest, TooLarge


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
