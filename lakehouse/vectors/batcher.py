"""Concurrent requests answered together: whatever arrives while a batch runs is the next
batch. One request alone runs at once (no window to wait out); under load, searches of one
index share one ``knn_query`` per partition — one thread hand-off and one GIL release for
the batch instead of one per search — and hnswlib spreads the batch over its threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """``await submit(item)`` runs ``run`` over a batch holding ``item`` (at most ``most``
    items) and returns its result for ``item``. ``run`` returns one result per item, in
    order; an exception it raises is every item's."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], most: int = 64) -> None:
        self.run = run
        self.most = most
        self.queue: list[tuple[T, asyncio.Future[R]]] = []
        self.task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.queue.append((item, future))
        if self.task is None:
            self.task = asyncio.create_task(self._drain(), name="batcher")
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self.queue:
                batch, self.queue = self.queue[: self.most], self.queue[self.most :]
                try:
                    results = await self.run([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # its requester may have given up
                        future.set_result(result)
        finally:
            self.task = None
            for _, future in [*batch, *self.queue]:  # left only when this task was cancelled
                if not future.done():
                    future.set_exception(RuntimeError("search stopped"))
            self.queue = []

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
