"""Route modules, one per area of the API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from gateway.app import State


async def state(request: Request) -> State:
    """FastAPI dependency: the gateway's shared resources. Async on purpose: FastAPI runs a
    sync dependency in its threadpool, a thread hop on every request."""
    lh: State = request.app.state.lh
    return lh
