"""``/mcp``: the MCP tools of :mod:`lakehouse.client.mcp` over streamable HTTP, on the gateway.

The tools' :class:`~lakehouse.client.http.Client` calls this same app in-process
(``httpx.ASGITransport``): an assistant gets exactly what the HTTP routes answer, with no
loopback socket. :func:`mount` adds the route (left out of the OpenAPI document) in
``create_app``; :func:`running`, entered in the lifespan, stops the MCP server at shutdown.

- Stateless, JSON responses: every MCP request stands alone (no session to pin to one
  gateway replica, no long-lived stream to hold up a graceful shutdown); the tools need
  no server-to-client messages.
- Started on first use: the MCP SDK takes ~0.8 s to import, so it loads (in a thread) on
  the first ``/mcp`` request, not on every gateway start; that request waits for it.
- Host/Origin checks (DNS rebinding): on a loopback bind (``gateway.host`` 127.0.0.1,
  localhost or ::1, the default) only those names are accepted, with any port: the MCP
  SDK's own default for a local server (421 for another Host, 403 for another Origin).
  On any other bind (``--host 0.0.0.0`` in deploy/compose.yaml) the gateway is reached
  under names it cannot know, so the check is off, as on every other route of the gateway.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import auth, errors
from lakehouse.platform.auth import LOOPBACK
from lakehouse.platform.errors import LakehouseError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings

    from lakehouse.client.http import Client
    from lakehouse.platform.config import Settings

log = logging.getLogger("gateway.mcp")

caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("mcp_caller", default=None)
"""The API key of the MCP request being handled, for the tools' in-process client."""


class NotAllowed(LakehouseError):
    status = 405
    error = "method not allowed"


PATH = "/mcp"


def transport_security(host: str) -> TransportSecuritySettings:
    """Host/Origin checks for the gateway bound to ``host`` (see the module docstring)."""
    from mcp.server.transport_security import TransportSecuritySettings

    if host not in LOOPBACK:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


class Endpoint:
    """The ASGI app at ``/mcp``: starts the MCP server on the first request, stops it with
    the gateway (:meth:`close`)."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.task: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[StreamableHTTPSessionManager] | None = None
        self.stop = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            rule = auth.RULES[(request.method, PATH)]
            await auth.admit(request, rule)
        except KeyError:
            await errors.error_response(NotAllowed(request.method))(scope, receive, send)
            return
        except LakehouseError as exc:
            await errors.error_response(exc)(scope, receive, send)
            return
        # The tools call the routes with the caller's own credentials (role, scopes, limits).
        caller.set(auth.presented(request)[0] if request.headers.get("authorization") else None)
        manager = await self.start()
        await manager.handle_request(scope, receive, send)

    def client(self) -> Client:
        import httpx  # with the client: a gateway nobody asks over MCP never loads them

        from lakehouse.client.http import Client

        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return Client(
            f"http://127.0.0.1:{self.settings.gateway.port}",
            transport=transport,
            api_key=caller.get(),
        )

    async def start(self) -> StreamableHTTPSessionManager:
        if self.ready is None:
            self.ready = asyncio.get_running_loop().create_future()
            # Its own context: not the first request's (log fields, tracing).
            self.task = asyncio.create_task(
                self.serve(self.ready), name="mcp", context=contextvars.Context()
            )
        return await asyncio.shield(self.ready)

    async def serve(self, ready: asyncio.Future[StreamableHTTPSessionManager]) -> None:
        try:
            # The SDK's import (~0.8 s) off the event loop; then the import below is a lookup.
            await asyncio.to_thread(importlib.import_module, "lakehouse.client.mcp")
            from lakehouse.client.mcp import build_server

            server = build_server(self.client)
            server.streamable_http_app(
                streamable_http_path=PATH,
                stateless_http=True,
                json_response=True,
                transport_security=transport_security(self.settings.gateway.host),
            )
            manager: StreamableHTTPSessionManager = server.session_manager
            async with manager.run():
                ready.set_result(manager)
                await self.stop.wait()
        except BaseException as exc:
            if not ready.done():
                log.error("MCP server failed to start", extra={"error": repr(exc)})
                ready.set_exception(RuntimeError(f"MCP server failed to start: {exc!r}"))
            raise

    async def close(self) -> None:
        """Stop the MCP server (if it started); the next lifespan may start it again."""
        task, self.task, self.ready = self.task, None, None
        if task is not None:
            self.stop.set()
            try:
                await asyncio.wait_for(task, 10)
            except Exception as exc:
                log.warning("MCP server stopped uncleanly", extra={"error": repr(exc)})
        self.stop = asyncio.Event()


def mount(app: FastAPI, settings: Settings) -> None:
    """Serve the MCP tools at ``/mcp`` (not in the OpenAPI document)."""
    endpoint = Endpoint(app, settings)
    app.state.mcp = endpoint
    app.router.routes.append(Route(PATH, endpoint, name="mcp", include_in_schema=False))


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[None]:
    """For the gateway's lifespan: the MCP server (once a request started it) stops at the
    end."""
    endpoint: Endpoint | None = getattr(app.state, "mcp", None)
    try:
        yield
    finally:
        if endpoint is not None:
            await endpoint.close()
