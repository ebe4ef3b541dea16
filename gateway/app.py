"""FastAPI application factory; resources open in the lifespan and close on shutdown."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Response
from fastapi.staticfiles import StaticFiles
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from starlette.middleware.gzip import GZipMiddleware

from gateway import auth, errors, limits, mcp
from gateway.filters import Filters
from gateway.limits import KeyLimits
from gateway.routes import catalog, contract, health, ingest, search, sql, storage, vectors
from gateway.web import datasets as dataset_pages
from gateway.web import login, pages
from lakehouse import __version__
from lakehouse.platform import backoff, metrics
from lakehouse.platform.auth import KeyStore
from lakehouse.platform.bus import connect
from lakehouse.platform.config import Settings, load_settings, redact_url
from lakehouse.platform.errors import Unavailable
from lakehouse.platform.storage import Storage, open_storage
from schemas import subjects as S

log = logging.getLogger("gateway")

DESCRIPTION = """
HTTP entry point of Lakehouse. Every route publishes to NATS or reads object storage;
workers do the work. Errors are always `{"error": ..., "detail": ...}`.
"""


@dataclass
class State:
    settings: Settings
    storage: Storage
    nc: NATS | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    put_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))

    catalog_seq: int = 0  # newest catalog event this gateway has seen (read-your-writes)
    index_specs: dict[str, Any] = field(default_factory=dict)  # cleared on any index change
    filters: Filters = field(default_factory=lambda: Filters(0))
    keys: KeyStore = field(default_factory=lambda: KeyStore(Path("/nonexistent/keys.json")))
    limits: KeyLimits = field(default_factory=lambda: KeyLimits(0, 1, 1))

    @property
    def nats_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def require_nats(self) -> NATS:
        if self.nc is None or not self.nc.is_connected:
            raise Unavailable(f"NATS is unreachable at {redact_url(self.settings.nats.url)}")
        return self.nc

    def saw_catalog_seq(self, seq: int) -> None:
        self.catalog_seq = max(self.catalog_seq, seq)


def warm_routes(app: FastAPI) -> None:
    """FastAPI prepares every route's request handling on the first request that reaches the
    router (~25 ms here, charged to whoever asks first); done at start instead."""
    scope = {"type": "http", "method": "GET", "path": "/", "root_path": "", "headers": []}
    for route in app.router.routes:
        route.matches(scope)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = State(settings, open_storage(settings))
        state.put_slots = asyncio.Semaphore(settings.gateway.max_concurrent_puts)
        state.filters = Filters(settings.gateway.filter_cache_bytes)
        state.keys = KeyStore(settings.keys_file)
        lim = settings.limits
        state.limits = KeyLimits(lim.requests_per_second, lim.burst, lim.max_concurrent_queries)
        app.state.lh = state
        warm_routes(app)

        async def connect_nats() -> None:
            nc = await connect(settings, "lakehouse-gateway", deadline=None)

            async def index_changed(msg: Msg) -> None:
                state.index_specs.clear()

            async def catalog_changed(msg: Msg) -> None:
                state.saw_catalog_seq(msg.metadata.sequence.stream)
                await state.filters.on_event(msg)

            await nc.subscribe(S.all_under(S.INDEXES_PREFIX), cb=index_changed)
            state.nc = nc
            # Pushed catalog events drop the cached filters that read the changed dataset; the
            # cache keeps nothing until this subscription stands (the stream may not exist yet).
            for attempt in itertools.count():
                try:
                    await nc.jetstream().subscribe(
                        S.all_under(S.CATALOG_EVENTS_PREFIX),
                        ordered_consumer=True,
                        deliver_policy=DeliverPolicy.NEW,
                        cb=catalog_changed,
                    )
                    state.filters.live = True
                    return
                except Exception as exc:
                    log.warning(
                        "catalog events not followed yet; filters uncached",
                        extra={"error": f"{type(exc).__name__}: {exc}"},
                    )
                    await asyncio.sleep(backoff.delay(attempt, 0.5, 10.0))

        connecting = asyncio.create_task(connect_nats())
        try:
            async with mcp.running(app):
                yield
        finally:
            connecting.cancel()
            if state.nc is not None and not state.nc.is_closed:
                try:
                    await state.nc.drain()
                except Exception as exc:
                    log.warning("nats drain failed", extra={"error": type(exc).__name__})
            await state.storage.close()

    app = FastAPI(
        title="Lakehouse",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(auth.authorize)],
    )
    errors.install(app)
    limits.install(app, settings)
    auth.install(app)
    app.include_router(health.router)
    app.include_router(storage.router)
    app.include_router(catalog.router)
    app.include_router(ingest.router)
    app.include_router(sql.router)
    app.include_router(vectors.router)
    app.include_router(search.router)
    app.include_router(contract.router)
    app.include_router(pages.router)
    app.include_router(dataset_pages.router)
    app.include_router(login.router)
    # The page assets (htmx is 52 KB, 16 KB gzipped) compressed; the JSON routes are not.
    static = GZipMiddleware(StaticFiles(directory=pages.STATIC_DIR), minimum_size=1024)
    app.mount("/static", static, name="static")
    mcp.mount(app, settings)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text() -> Response:
        """Prometheus metrics of this process (:mod:`lakehouse.platform.metrics`)."""
        body, ctype = metrics.exposition()
        return Response(body, media_type=ctype)

    # Outermost: counts every answer, the limits' 413s and the auth's 401/403/429 included.
    app.add_middleware(metrics.HttpMetrics)
    return app
