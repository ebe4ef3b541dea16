"""An upload staged in parts, read while it arrives: the one owner of the format.

``staging/<job>.parts/`` holds ``000000``, ``000001``, ... (:func:`keys.upload_part`) and,
after the last, ``end`` (:func:`keys.upload_end`): :func:`end_record` once every part is
stored, :func:`failed_record` when the upload failed after its job started. The gateway
writes it (``gateway.uploads.stage``); an ingest job reads it with :func:`follow`, which
feeds a :class:`~lakehouse.platform.storage.growing.Growing` the converter reads as one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

from lakehouse.platform.errors import NotFound, RetryLater
from lakehouse.platform.storage import Storage, keys
from lakehouse.platform.storage.growing import Growing


class UploadFailed(Exception):
    """The upload will not complete: the reason a job reports (``upload failed``)."""


def end_record(parts: int, size: int) -> bytes:
    return json.dumps({"parts": parts, "bytes": size}).encode()


def failed_record(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()


async def local_part(storage: Storage, prefix: str, n: int, work: Path) -> Path | None:
    """Part ``n`` as a local file, or None while it has not landed (the file backend's own
    file; else a copy in ``work``)."""
    key = keys.upload_part(prefix, n)
    path = storage.local_path(key)
    if path is not None:
        return path if path.exists() else None
    path = work / f"part{n:06d}"
    try:
        await storage.get_file(key, path)
    except NotFound:
        path.unlink(missing_ok=True)
        return None
    return path


async def follow(
    storage: Storage, prefix: str, growing: Growing, work: Path, *, idle: float, start: int = 0
) -> None:
    """Feed ``growing`` parts ``start``, ``start + 1``, ... in order until the ``end``; polls
    storage with a growing interval (2 ms to 100 ms). The upload fails (:class:`UploadFailed`)
    on a failed ``end``, an ``end`` that does not match the parts, or ``idle`` seconds
    without a new part; a storage error fails it with RetryLater (the job is retried)."""
    n, since, delay = start, time.monotonic(), 0.002
    try:
        while True:
            path = await local_part(storage, prefix, n, work)
            if path is not None:
                growing.add(path)
                n, since, delay = n + 1, time.monotonic(), 0.002
                continue
            with contextlib.suppress(NotFound):
                end = json.loads(await storage.get_bytes(keys.upload_end(prefix)))
                if "error" in end:
                    growing.fail(UploadFailed(str(end["error"])))
                elif end["parts"] > n and await local_part(storage, prefix, n, work) is not None:
                    continue  # part n landed after it was looked for
                elif (end["parts"], end["bytes"]) != (n, growing.arrived):
                    why = f"{n} parts of {growing.arrived} bytes, not {end}"
                    growing.fail(UploadFailed(f"the upload's end does not match its parts: {why}"))
                else:
                    growing.finish()
                return
            if time.monotonic() - since > idle:
                growing.fail(
                    UploadFailed(f"no part of the upload arrived for {idle:g} s after part {n - 1}")
                )
                return
            await asyncio.sleep(delay)  # bounded polling: the deadline is above
            delay = min(delay * 2, 0.1)
    except Exception as exc:  # a storage failure
        growing.fail(RetryLater(f"reading the upload's parts: {exc}"))
