"""Route modules, one per area of the API, each on a router of :class:`JsonRoute`."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute

if TYPE_CHECKING:
    from gateway.app import State


async def state(request: Request) -> State:
    """FastAPI dependency: the gateway's shared resources. Async on purpose: FastAPI runs a
    sync dependency in its threadpool, a thread hop on every request."""
    lh: State = request.app.state.lh
    return lh


class JsonRequest(Request):
    """A request whose JSON body is parsed by pydantic's parser: ~8× faster than ``json.loads``
    on a body of floats (22 vs 170 µs for a 384-d search vector). A body it refuses is parsed
    again by ``json.loads``, so invalid JSON fails exactly as before (FastAPI's 400 with the
    position)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body)
            except ValueError:
                self._json = json.loads(body)
        return self._json


class JsonRoute(APIRoute):
    """An API route that hands its endpoint a :class:`JsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return route_handler
