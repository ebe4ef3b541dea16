"""The gateway's HTTP API as one async client: every client verb (CLI, MCP tools) goes
through it, so a route's shape is known in one place on the client side.

Errors come back as :class:`GatewayError` carrying the gateway's ``{"error", "detail"}``
shape as one line; an unreachable gateway is a ``GatewayError`` too (status 0).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:3110"
URL_ENV = "LAKEHOUSE_URL"
CA_ENV = "LAKEHOUSE_CA"
"""A CA bundle (PEM) to trust for an https gateway, e.g. ``<data_dir>/secrets/ca.pem``;
unset: the system's trust (httpx honours ``SSL_CERT_FILE``)."""


KEY_ENV = "LAKEHOUSE_API_KEY"


def default_key() -> str | None:
    """The API key the verbs for people send: ``$LAKEHOUSE_API_KEY`` (none: the gateway
    must be one without keys, on loopback)."""
    return os.environ.get(KEY_ENV) or None


def default_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


def default_verify() -> ssl.SSLContext | bool:
    """What an https gateway's certificate is checked against: ``$LAKEHOUSE_CA``, else the
    default trust."""
    ca = os.environ.get(CA_ENV)
    return ssl.create_default_context(cafile=ca) if ca else True


class GatewayError(Exception):
    """A non-2xx answer (or no answer) from the gateway, as one line."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        self.status, self.error, self.detail = status, error, detail
        super().__init__(self.line())

    def line(self) -> str:
        detail = self.detail
        if isinstance(detail, list):  # schema errors: [{"loc", "msg"}]
            detail = "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}"
                if isinstance(d, dict)
                else str(d)
                for d in detail
            )
        text = f"{self.error}: {detail}" if detail not in (None, "") else self.error
        return " ".join(str(text).split())


class Client:
    """``async with Client(url) as gw: await gw.sql("SELECT 1")``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 150.0,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        self.url = (url or default_url()).rstrip("/")
        key = api_key if api_key is not None or transport is not None else default_key()
        self.http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            transport=transport,
            verify=default_verify() if transport is None else True,
            headers={"Authorization": f"Bearer {key}"} if key else None,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = await self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise GatewayError(0, f"cannot reach the gateway at {self.url}", _why(exc)) from None
        if r.status_code >= 400:
            raise error_of(r)
        return r

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        return (await self.request(method, path, **kw)).json()

    # ---- the routes ------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        out: dict[str, Any] = await self.json("GET", "/health")
        return out

    async def datasets(self) -> list[dict[str, Any]]:
        out = await self.json("GET", "/v1/catalog")  # {"datasets"}
        return list(out["datasets"])

    async def dataset(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = await self.json("GET", f"/v1/catalog/{name}")
        return out

    async def history(self, name: str) -> list[dict[str, Any]]:
        out = await self.json("GET", f"/v1/catalog/{name}/history")  # {"name", "events"}
        return list(out["events"])

    async def sql(self, sql: str, *, max_rows: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"sql": sql}
        if max_rows is not None:
            body["max_rows"] = max_rows
        out: dict[str, Any] = await self.json("POST", "/v1/sql", json=body)
        return out

    async def sql_arrow(self, sql: str) -> bytes:
        r = await self.request(
            "POST",
            "/v1/sql",
            json={"sql": sql},
            headers={"accept": "application/vnd.apache.arrow.stream"},
        )
        return r.content

    async def indexes(self) -> list[dict[str, Any]]:
        out = await self.json("GET", "/v1/vectors/indexes")  # {"indexes"}
        return list(out["indexes"])

    async def search(
        self,
        index: str,
        *,
        text: str | None = None,
        vector: list[float] | None = None,
        k: int = 10,
        filter: str | None = None,
        fields: list[str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"k": k}
        if text is not None:
            body["text"] = text
        if vector is not None:
            body["vector"] = vector
        if filter:
            body["filter"] = filter
        if fields is not None:
            body["fields"] = fields
        out: dict[str, Any] = await self.json(
            "POST", f"/v1/vectors/indexes/{index}/search", json=body
        )
        return out

    async def jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        out = await self.json("GET", "/v1/jobs", params={"limit": limit})
        return list(out["jobs"])

    async def job(self, job_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self.json("GET", f"/v1/jobs/{job_id}")
        return out

    async def ingest(
        self,
        path: Path,
        name: str,
        *,
        mode: str = "replace",
        key: str | None = None,
        delete_missing: bool = False,
        schema: str | None = None,
        wait: float = 0,
        embed_index: str | None = None,
        id_column: str | None = None,
        text_template: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Stream ``path`` as the request body; ``on_bytes(n)`` after each chunk sent.
        ``mode="upsert"`` takes ``key`` (the key column) and ``delete_missing``; ``schema`` is
        strict (the gateway's default), evolve or any. Answers the job (``{"job_id", ...}``
        with ``wait=0``) or its result."""
        params: dict[str, Any] = {"name": name, "mode": mode, "wait": wait}
        if delete_missing:
            params["delete_missing"] = "true"
        for param, value in (
            ("key", key),
            ("schema", schema),
            ("embed_index", embed_index),
            ("id_column", id_column),
            ("text_template", text_template),
        ):
            if value is not None:
                params[param] = value

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as fh:
                while block := fh.read(1 << 20):
                    if on_bytes is not None:
                        on_bytes(len(block))
                    yield block

        out: dict[str, Any] = await self.json(
            "POST",
            "/v1/ingest",
            params=params,
            content=chunks(),
            headers={"content-type": "text/csv", "content-length": str(path.stat().st_size)},  # noqa: ASYNC240
        )
        return out


def _why(exc: httpx.TransportError) -> str:
    """The error's type, and for a refused certificate the reason and what to do."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return type(exc).__name__
    reason = cause.verify_message or "certificate verify failed"
    return f"TLS: {reason} (set {CA_ENV} to the CA that signed the gateway's certificate)"


def error_of(r: httpx.Response) -> GatewayError:
    try:
        body = r.json()
        return GatewayError(
            r.status_code, str(body.get("error", r.status_code)), body.get("detail")
        )
    except (ValueError, AttributeError):
        return GatewayError(r.status_code, f"HTTP {r.status_code}", r.text[:200])
