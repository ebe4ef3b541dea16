"""Who may call what: API keys and their roles on every route, per-key limits.

:data:`RULES` is the one table of access rules: every route of the app (JSON, pages, /mcp)
has one, and ``tests/test_auth.py`` fails for a route without. :func:`authorize` (a
dependency of the whole app) finds the caller's key — ``Authorization: Bearer lh_...``, or
the web login's cookie — checks the route's role and the key's scopes, then the key's request
rate and queries in flight. Missing or unknown key: 401 with ``WWW-Authenticate: Bearer``
(a page redirects to ``/login`` instead); a role or scope that may not: 403 naming what is
needed; a limit: 429 with ``Retry-After``.

No keys configured and a loopback bind (``make run``): every request is :data:`ANONYMOUS`
(admin), so the README's curl examples need no key. A non-loopback bind without keys is
refused at start (:func:`refuse_unprotected`) unless ``auth.insecure_no_auth``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request

from gateway import errors
from lakehouse.platform import lazy
from lakehouse.platform.auth import ANONYMOUS, LOOPBACK, ApiKey, KeyStore, Role
from lakehouse.platform.errors import (
    BadRequest,
    Forbidden,
    LakehouseError,
    Unauthorized,
)
from lakehouse.platform.rpc import call
from lakehouse.tables.sqlnames import referenced
from schemas import subjects as S
from schemas.catalog import DatasetList

if TYPE_CHECKING:
    from gateway.app import State
    from lakehouse.platform.config import Settings

log = logging.getLogger("gateway.auth")

COOKIE = "lh_session"
SAFE = ("GET", "HEAD", "OPTIONS")

Scope = Literal["none", "name", "key", "sql", "list", "body", "deny"]
"""What a key limited to some names (``scopes``) is checked against on a route:

- ``none``: the route names no dataset or index (allowed).
- ``name``: the ``name`` path or query parameter.
- ``key``: a storage key (``datasets/<name>/...``, ``_vectors/<name>/...``; other keys refused).
- ``sql``: every table the SQL (``sql`` in the body, ``q`` in the query) reads.
- ``list``: the route lists names and shows only the key's (:func:`visible`).
- ``body``: the route checks the name in its body (:func:`require_name`).
- ``deny``: a scoped key may not use the route at all.
"""


@dataclass(frozen=True)
class Rule:
    role: Role | None  # None: public
    scope: Scope = "none"
    query: bool = False  # counts against limits.max_concurrent_queries
    page: bool = False  # a web page: no credentials -> redirect to /login


PUBLIC = Rule(None)
R, W, A = Role.reader, Role.writer, Role.admin

RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/metrics"): Rule(R),  # Prometheus sends a reader key as its bearer token
    ("GET", "/asyncapi.json"): PUBLIC,
    ("GET", "/asyncapi"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    # storage
    ("GET", "/v1/storage"): Rule(R, "deny"),
    ("PUT", "/v1/storage/{key:objkey}"): Rule(W, "key"),
    ("GET", "/v1/storage/{key:objkey}"): Rule(R, "key"),
    ("DELETE", "/v1/storage/{key:objkey}"): Rule(W, "key"),
    # catalog
    ("GET", "/v1/catalog"): Rule(R, "list"),
    ("POST", "/v1/catalog"): Rule(W, "body"),
    ("GET", "/v1/catalog/{name}"): Rule(R, "name"),
    ("DELETE", "/v1/catalog/{name}"): Rule(A, "name"),
    ("GET", "/v1/catalog/{name}/history"): Rule(R, "name"),
    ("POST", "/v1/catalog/{name}/compact"): Rule(W, "name"),
    # ingest and jobs
    ("POST", "/v1/ingest"): Rule(W, "name"),
    ("GET", "/v1/jobs"): Rule(R, "deny"),
    ("GET", "/v1/jobs/{job_id}"): Rule(R),
    # SQL, vectors, search
    ("POST", "/v1/sql"): Rule(R, "sql", query=True),
    ("POST", "/v1/vectors/indexes"): Rule(W, "body"),
    ("GET", "/v1/vectors/indexes"): Rule(R, "list"),
    ("GET", "/v1/vectors/indexes/{name}"): Rule(R, "name"),
    ("DELETE", "/v1/vectors/indexes/{name}"): Rule(A, "name"),
    ("POST", "/v1/vectors/indexes/{name}/items"): Rule(W, "name"),
    ("DELETE", "/v1/vectors/indexes/{name}/items"): Rule(W, "name"),
    ("POST", "/v1/vectors/indexes/{name}/search"): Rule(R, "name", query=True),
    ("POST", "/v1/embed"): Rule(R),
    # the web app
    ("GET", "/"): Rule(R, "list", query=True, page=True),
    ("GET", "/sql"): Rule(R, "sql", query=True, page=True),
    ("GET", "/sql/result.{fmt}"): Rule(R, "sql", query=True, page=True),
    ("GET", "/status"): Rule(R, "deny", page=True),
    ("GET", "/datasets"): Rule(R, "list", page=True),
    ("GET", "/datasets/{name}"): Rule(R, "name", page=True),
    ("POST", "/datasets/{name}/upload"): Rule(W, "name", page=True),
    ("GET", "/jobs/{job_id}"): Rule(R, page=True),
    # MCP: read-only tools that call the routes above with the caller's key
    ("POST", "/mcp"): Rule(R),
    ("GET", "/mcp"): Rule(R),
    ("DELETE", "/mcp"): Rule(R),
}
"""(method, route path) -> rule. Not here and public: the API documents (``/openapi.json``,
``/docs``, ``/redoc``) and ``/static`` (the pages' CSS and scripts)."""


# ---- the gate ------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    return host in LOOPBACK


def open_access(settings: Settings) -> bool:
    """Whether a gateway without keys serves everyone (loopback, or explicitly insecure)."""
    return is_loopback(settings.gateway.host) or settings.auth.insecure_no_auth


def mode(settings: Settings, keys: KeyStore) -> str:
    """How this gateway authenticates, for ``/health`` and the banner."""
    if keys.configured:
        return "api keys"
    if is_loopback(settings.gateway.host):
        return "none (loopback only)"
    return "none (--insecure-no-auth)" if settings.auth.insecure_no_auth else "refused"


def refuse_unprotected(settings: Settings) -> str | None:
    """Why this gateway must not start (a non-loopback bind without keys), or None."""
    if open_access(settings) or KeyStore(settings.keys_file).configured:
        return None
    return (
        f"refusing to serve {settings.gateway.host} without API keys: create one with "
        f"`lakehouse keys create --role admin --data-dir {settings.data_dir}` "
        "(or pass --insecure-no-auth to serve everyone)"
    )


def presented(request: Request) -> tuple[str | None, bool]:
    """The key the request carries and whether it came from the login cookie."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip(), False
        raise Unauthorized("send the API key as `Authorization: Bearer <key>`")
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


def identify(request: Request, st: State) -> ApiKey:
    """The caller's key (401 when there is none that matches)."""
    if not st.keys.configured:
        if open_access(st.settings):
            return ANONYMOUS
        raise Unauthorized("this gateway has no API keys configured")
    token, from_cookie = presented(request)
    if token is None:
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`")
    key = st.keys.from_session(token) if from_cookie else st.keys.verify(token)
    if key is None:
        raise Unauthorized("the session has expired" if from_cookie else "unknown API key")
    if from_cookie and request.method not in SAFE:
        same_origin(request)
    return key


def same_origin(request: Request) -> None:
    """A cookie-authenticated write must come from the gateway's own pages (CSRF): the
    browser's ``Origin`` (or ``Sec-Fetch-Site``) must say so; the cookie is also
    ``SameSite=Strict``."""
    origin = request.headers.get("origin")
    if origin is not None:
        if urlsplit(origin).netloc != request.headers.get("host", ""):
            raise Forbidden("cross-site request refused")
    elif request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("cross-site request refused")


def rule_for(request: Request) -> Rule | None:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return RULES.get((request.method if request.method != "HEAD" else "GET", str(path)))


async def authorize(request: Request) -> AsyncIterator[None]:
    """The app-wide dependency: identify, check role, scope and limits, count the query."""
    rule = rule_for(request)
    if rule is None:
        raise Forbidden(f"no access rule for {request.method} {request.url.path}")
    key = await admit(request, rule)
    if key is None or not rule.query:
        yield
        return
    st: State = request.app.state.lh
    with st.limits.query(key.id):
        yield


async def admit(request: Request, rule: Rule) -> ApiKey | None:
    """The caller's key once ``rule`` lets it through (None for a public route); raises the
    401/403/429 otherwise (logged with the key's id, never the key). The key is kept on
    ``request.state.key``."""
    if rule.role is None:
        return None
    try:
        return await _admit(request, rule)
    except LakehouseError as exc:
        key = getattr(request.state, "key", None)
        log.info(
            "request refused",
            extra={
                "status": exc.status,
                "method": request.method,
                "path": request.url.path,
                "key_id": key.id if key else None,
                "reason": str(exc.detail),
            },
        )
        raise


async def _admit(request: Request, rule: Rule) -> ApiKey:
    st: State = request.app.state.lh
    needed = rule.role or Role.reader
    try:
        key = identify(request, st)
    except Unauthorized:
        if rule.page and request.method in SAFE and "authorization" not in request.headers:
            raise LoginRequired(request.url.path, str(request.url.query)) from None
        raise
    request.state.key = key
    if not key.role.covers(needed):
        raise Forbidden(
            f"key {key.id} has role {key.role.value}; {request.method} "
            f"{request.url.path} needs {needed.value}"
        )
    if key.scoped:
        await check_scope(request, st, key, rule)
    st.limits.take(key.id)
    return key


class LoginRequired(Exception):
    """A page asked for without credentials: answered with a redirect to ``/login``."""

    def __init__(self, path: str, query: str) -> None:
        super().__init__(path)
        self.next = f"{path}?{query}" if query else path


def key_of(request: Request) -> ApiKey:
    return getattr(request.state, "key", ANONYMOUS)


# ---- scopes --------------------------------------------------------------------------------


def out_of_scope(key: ApiKey, name: str) -> Forbidden:
    return Forbidden(f"key {key.id} is limited to {', '.join(key.scopes)}; not {name!r}")


def require_name(request: Request, name: str) -> None:
    """For ``body`` routes: 403 unless the caller's key reaches ``name``."""
    key = key_of(request)
    if not key.sees(name):
        raise out_of_scope(key, name)


def visible(request: Request, names: list[str]) -> list[str]:
    """For ``list`` routes: the names the caller's key reaches."""
    key = key_of(request)
    return [n for n in names if key.sees(n)]


def storage_name(key: str) -> str | None:
    """The dataset or index a storage key belongs to."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] in ("datasets", "_vectors"):
        return parts[1]
    return None


async def check_scope(request: Request, st: State, key: ApiKey, rule: Rule) -> None:
    if rule.scope == "deny":
        raise Forbidden(f"key {key.id} is limited to {', '.join(key.scopes)}; this route is not")
    if rule.scope == "name":
        name = request.path_params.get("name") or request.query_params.get("name")
        if name is not None and not key.sees(name):
            raise out_of_scope(key, name)
    elif rule.scope == "key":
        name = storage_name(str(request.path_params.get("key", "")))
        if name is None or not key.sees(name):
            raise out_of_scope(key, str(request.path_params.get("key", "")))
    elif rule.scope == "sql":
        sql = request.query_params.get("q")
        if sql is None and request.method == "POST":
            try:
                sql = (await request.json()).get("sql")
            except Exception:
                sql = None  # the route answers the malformed body
        if sql:
            await check_sql(st, key, sql)


async def check_sql(st: State, key: ApiKey, sql: str) -> None:
    """Every table ``sql`` reads must be a dataset the key reaches (a CTE's own name is fine
    unless a dataset the key may not see has that name); table functions are refused."""
    await lazy.loaded("duckdb")  # the parser; imported by the first scoped query
    names = referenced(sql)
    if names.error is not None:
        raise BadRequest(f"SQL does not parse: {names.error}")
    if names.table_functions:
        raise Forbidden(
            f"key {key.id} is limited to {', '.join(key.scopes)}; table functions "
            f"({', '.join(sorted(names.table_functions))}) are not allowed"
        )
    hidden = {t for t in names.tables if not key.sees(t)}
    if hidden & names.ctes:
        raw = await call(
            st.require_nats(),
            S.CATALOG_LIST,
            b"{}",
            timeout=st.settings.nats.request_timeout,
            what="catalog",
        )
        datasets = {m.name for m in DatasetList.model_validate_json(raw).datasets}
        hidden = (hidden - names.ctes) | (hidden & names.ctes & datasets)
    if hidden:
        raise out_of_scope(key, sorted(hidden)[0])


# ---- installing it -------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """The login redirect, and the rules in the OpenAPI document: a bearer scheme, and on
    every protected operation its role and the 401/403/429 it can answer."""
    from fastapi.responses import RedirectResponse

    @app.exception_handler(LoginRequired)
    async def login_first(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?{urlencode({'next': exc.next})}", status_code=303)

    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        if "BearerKey" in schema.get("components", {}).get("securitySchemes", {}):
            return schema
        schema.setdefault("components", {})["securitySchemes"] = {
            "BearerKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (`lakehouse keys create`). Not needed when the "
                "gateway has no keys and listens on loopback only.",
            }
        }
        for path, ops in schema.get("paths", {}).items():
            for method, op in ops.items():
                rule = RULES.get((method.upper(), path))
                if rule is None or rule.role is None or not isinstance(op, dict):
                    continue
                op["security"] = [{"BearerKey": []}]
                op["description"] = (
                    f"{op.get('description', '')}\n\nNeeds a `{rule.role.value}` key."
                ).strip()
                answers = op.setdefault("responses", {})
                for code in (401, 403, 429):
                    answers.setdefault(str(code), errors.documented(code))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
