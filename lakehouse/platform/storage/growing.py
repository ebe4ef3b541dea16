"""A file that is still arriving: parts appended by one task, read from the top by others.

Streaming ingest converts an upload while the gateway is still storing it, part by part
(:func:`lakehouse.platform.storage.parts.follow` adds them as they land;
:mod:`lakehouse.tables.csv2parquet` reads them).
:class:`Growing` is the whole upload as one byte stream: :meth:`Growing.open` gives a reader
from offset 0 that blocks at the end of what has arrived until the next part lands, the
upload ends (end of file) or fails (the reader raises the failure). Any number of readers may
be open, each with its own position, so the converter can restart from the top (the
widen-to-string rule) while parts are still arriving.

Imports nothing of ours; thread-safe (parts are added from the event loop, read from the
converter's threads).
"""

from __future__ import annotations

import bisect
import io
import threading
from pathlib import Path
from typing import Any


class Growing:
    """Parts (local files, in order) of one upload; see the module docstring."""

    def __init__(self) -> None:
        self._parts: list[tuple[Path, int]] = []  # (file, bytes before it)
        self._starts: list[int] = []
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def add(self, path: Path) -> None:
        """Append the next part (a complete local file)."""
        size = path.stat().st_size
        with self._cond:
            self._parts.append((path, self._size))
            self._starts.append(self._size)
            self._size += size
            self._cond.notify_all()

    def finish(self) -> None:
        """Every part is in: readers see end of file after the last one."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """The upload will not complete: every blocked or later read raises ``error``."""
        with self._cond:
            self._error = error
            self._cond.notify_all()

    @property
    def arrived(self) -> int:
        """Bytes in the parts added so far."""
        return self._size

    @property
    def error(self) -> BaseException | None:
        """Why the upload will not complete (see :meth:`fail`), else None."""
        return self._error

    def size(self) -> int:
        """The whole upload's size; blocks until it is complete."""
        self._wait(lambda: self._done)
        return self._size

    def open(self) -> GrowingReader:
        return GrowingReader(self)

    def _wait(self, ready: Any) -> None:
        with self._cond:
            self._cond.wait_for(lambda: ready() or self._error is not None)
            if self._error is not None:
                raise self._error

    def _at(self, offset: int) -> tuple[Path, int, int] | None:
        """The part holding ``offset``: (file, offset within it, bytes left in it); None at
        the end of a complete upload. Blocks while ``offset`` has not arrived yet."""
        self._wait(lambda: offset < self._size or self._done)
        with self._cond:
            if offset >= self._size:
                return None
            i = bisect.bisect_right(self._starts, offset) - 1
            path, start = self._parts[i]
            end = self._starts[i + 1] if i + 1 < len(self._starts) else self._size
        return path, offset - start, end - offset


class GrowingReader(io.RawIOBase):
    """One reader of a :class:`Growing` upload, seekable: ``read(n)`` blocks until ``n``
    bytes have arrived or the upload is complete (then it returns the rest, ``b""`` at the
    end), or raises the upload's failure."""

    def __init__(self, growing: Growing) -> None:
        super().__init__()
        self.growing = growing
        self.pos = 0
        self._file: Any = None
        self._path: Path | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.pos
        elif whence == io.SEEK_END:
            offset += self.growing.size()
        self.pos = max(offset, 0)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` as a file would: short only at the end of the upload (pyarrow's
        CSV reader cuts a record that straddles a short block)."""
        if self.closed:
            raise ValueError("read of a closed upload reader")
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            at = self.growing._at(self.pos)
            if at is None:
                break
            path, inside, left = at
            if path is not self._path:
                if self._file is not None:
                    self._file.close()
                self._file, self._path = open(path, "rb"), path
            self._file.seek(inside)
            n = self._file.readinto(view[filled : filled + min(len(view) - filled, left)])
            self.pos += n
            filled += n
        return filled

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()
