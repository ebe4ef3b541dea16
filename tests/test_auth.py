"""API keys on the gateway: every route has an access rule, and every role is refused what
its rule does not allow (the route x role table), scopes, web login, per-key limits.

In-process (FastAPI's TestClient) with no NATS behind it: a request the rules let through
reaches its route and answers 503 (or a 400 for its body); one they stop answers 401, 403,
429 or, for a page, a redirect to ``/login``. The secured stack end to end (keys over HTTPS
on real processes) is in ``tests/test_secure.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway import auth
from gateway.app import create_app
from lakehouse.platform.auth import KeyStore, Role
from lakehouse.platform.config import Settings, load_settings

NOT_PUBLIC_EXTRA = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")}
SAMPLE = {
    "{name}": "workers",
    "{key:objkey}": "datasets/workers/a.parquet",
    "{job_id}": "job-0123456789abcdef0123456789abcdef",
    "{fmt}": "csv",
}


def settings_for(tmp: Path, **limits: Any) -> Settings:
    return load_settings(
        tmp / "none.toml",
        data_dir=tmp,
        nats={"url": "nats://127.0.0.1:9", "connect_timeout": 0.2},
        limits=limits or None,
    )


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers flattened."""
    out: set[tuple[str, str]] = set()
    for route in app.router.routes:
        inner = getattr(route, "original_router", None)
        for r in inner.routes if inner is not None else [route]:
            path = getattr(r, "path", None)
            if path is None or path.startswith("/static"):
                continue
            methods = getattr(r, "methods", None) or {"GET", "POST", "DELETE"}  # /mcp: any
            out |= {(m, path) for m in methods if m != "HEAD"}
    return out - {("GET", "/docs/oauth2-redirect")} - NOT_PUBLIC_EXTRA


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("auth")
    settings = settings_for(tmp)
    store = KeyStore(settings.keys_file)
    keys = {role.value: store.create(role, label=role.value)[0] for role in Role}
    keys["scoped"] = store.create(Role.admin, ("work*",), "scoped")[0]
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client, keys


def call(client: TestClient, method: str, path: str, key: str | None, **kw: Any) -> Any:
    for hole, value in SAMPLE.items():
        path = path.replace(hole, value)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if path == "/mcp":
        headers["Accept"] = "application/json"  # a GET would otherwise open an event stream
    if method in ("POST", "PUT") and "json" not in kw and "content" not in kw:
        kw["json"] = {}
    return client.request(method, path, headers=headers, follow_redirects=False, **kw)


def test_every_route_has_a_rule_and_every_rule_a_route() -> None:
    app = create_app(settings_for(Path("/nonexistent")))
    assert app_routes(app) == set(auth.RULES), (
        "routes without an access rule in gateway/auth.py RULES, or rules without a route"
    )


@pytest.mark.parametrize(("method", "path"), sorted(auth.RULES))
def test_route_by_role(gw: tuple[TestClient, dict[str, str]], method: str, path: str) -> None:
    """Each role against each route: below the rule's role 403, at or above it through."""
    client, keys = gw
    rule = auth.RULES[(method, path)]
    anonymous = call(client, method, path, None)
    if rule.role is None:  # (POST /login answers 401 to the empty form: that is its job)
        refused = (403,) if path == "/login" else (401, 403)
        assert anonymous.status_code not in refused, anonymous.text
        return
    if rule.page and method == "GET":
        assert anonymous.status_code == 303
        assert anonymous.headers["location"].startswith("/login?next=")
    else:
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = call(client, method, path, "lh_00000000_not-a-key")
    assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown API key"
    for role in Role:
        r = call(client, method, path, keys[role.value])
        if role.covers(rule.role):
            assert r.status_code not in (401, 403), (role, r.text)
        else:
            assert r.status_code == 403, (role, r.text)
            assert f"needs {rule.role.value}" in r.json()["detail"]


def test_openapi_documents_the_rules(gw: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = gw
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["BearerKey"]["scheme"] == "bearer"
    ingest = doc["paths"]["/v1/ingest"]["post"]
    assert ingest["security"] == [{"BearerKey": []}]
    assert {"401", "403", "429"} <= set(ingest["responses"])
    assert "Needs a `writer` key." in ingest["description"]
    assert "security" not in doc["paths"]["/health"]["get"]


def test_scoped_key_reaches_only_its_names(gw: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = gw
    key = keys["scoped"]

    def status(method: str, path: str, **kw: Any) -> int:
        return int(call(client, method, path, key, **kw).status_code)

    assert status("GET", "/v1/catalog/workers") == 503  # through to the (absent) worker
    assert status("GET", "/v1/catalog/other") == 403
    assert status("DELETE", "/v1/vectors/indexes/other") == 403
    assert status("POST", "/v1/ingest?name=other", content=b"a\n1\n") == 403
    assert status("GET", "/v1/storage/datasets/workers/x.parquet") == 404  # file storage
    assert status("GET", "/v1/storage/datasets/other/x.parquet") == 403
    assert status("GET", "/v1/storage/_jobs/x.json") == 403  # belongs to no dataset
    assert status("GET", "/v1/storage") == 403  # lists every dataset's objects
    assert status("POST", "/v1/sql", json={"sql": "SELECT * FROM workers"}) == 503
    refused = call(client, "POST", "/v1/sql", key, json={"sql": "SELECT * FROM other o"})
    assert refused.status_code == 403 and "not 'other'" in refused.json()["detail"]
    sneaky = "SELECT * FROM workers WHERE id IN (SELECT id FROM pay)"
    assert status("POST", "/v1/sql", json={"sql": sneaky}) == 403
    assert status("POST", "/v1/sql", json={"sql": "SELECT * FROM query_table('pay')"}) == 403
    assert status("GET", "/sql?q=SELECT+1+FROM+pay") == 403
    assert status("POST", "/v1/vectors/indexes", json={"name": "other", "dim": 4}) == 403


def test_web_login_sets_a_strict_cookie_and_refuses_cross_site_writes(
    gw: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = gw
    client.cookies.clear()
    bad = client.post("/login", data={"key": "lh_00000000_nope", "next": "/sql"})
    assert bad.status_code == 401 and "not valid" in bad.text
    ok = client.post(
        "/login", data={"key": keys["writer"], "next": "//evil.example/"}, follow_redirects=False
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/"  # no open redirect
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert keys["writer"] not in cookie  # a signed session, not the key
    page = client.get("/datasets", follow_redirects=False)
    assert page.status_code not in (303, 401, 403)
    evil = {"Origin": "http://evil.example"}
    upload = client.post("/datasets/workers/upload", headers=evil, follow_redirects=False)
    assert upload.status_code == 403 and "cross-site" in upload.json()["detail"]
    same = {"Origin": "http://127.0.0.1"}
    upload = client.post("/datasets/workers/upload", headers=same, follow_redirects=False)
    assert upload.status_code not in (401, 403)
    client.post("/logout")
    assert client.get("/datasets", follow_redirects=False).status_code == 303
    client.cookies.clear()


def test_revoking_a_key_ends_it_and_its_sessions(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = KeyStore(settings.keys_file)
    keep, _ = store.create(Role.admin)
    key, record = store.create(Role.reader)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        login = client.post("/login", data={"key": key}, follow_redirects=False)
        assert login.status_code == 303
        assert client.get("/datasets", follow_redirects=False).status_code == 503
        KeyStore(settings.keys_file).revoke(record.id)
        client.app.state.lh.keys._checked = 0.0  # skip the 1 s between file checks
        assert client.get("/datasets", follow_redirects=False).status_code == 303
        headers = {"Authorization": f"Bearer {key}"}
        assert client.get("/v1/catalog", headers=headers).status_code == 401
        headers = {"Authorization": f"Bearer {keep}"}
        assert client.get("/v1/catalog", headers=headers).status_code == 503


def test_rate_and_concurrency_limits_answer_429(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, requests_per_second=0.5, burst=2, max_concurrent_queries=0)
    key, _ = KeyStore(settings.keys_file).create(Role.reader)
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        sql = client.post("/v1/sql", json={"sql": "SELECT 1"}, headers=headers)
        assert sql.status_code == 429 and "limits.max_concurrent_queries" in sql.text
        assert client.get("/v1/catalog", headers=headers).status_code == 503
        third = client.get("/v1/catalog", headers=headers)
        assert third.status_code == 429 and "limits.requests_per_second" in third.text
        assert int(third.headers["retry-after"]) >= 1


def test_no_keys_loopback_is_open_and_other_binds_are_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        assert client.get("/v1/catalog").status_code == 503  # no key needed
        assert client.get("/health").json()["gateway"]["auth"] == "none (loopback only)"
    settings.gateway.host = "0.0.0.0"
    problem = auth.refuse_unprotected(settings)
    assert problem and "lakehouse keys create --role admin" in problem
    settings.auth.insecure_no_auth = True
    assert auth.refuse_unprotected(settings) is None
    assert auth.mode(settings, KeyStore(settings.keys_file)) == "none (--insecure-no-auth)"


def test_keys_never_reach_logs_or_answers(
    gw: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    client, keys = gw
    caplog.set_level(logging.DEBUG)
    for key in keys.values():
        for path in ("/v1/catalog", "/health", "/v1/catalog/x%20y"):
            r = client.get(path, headers={"Authorization": f"Bearer {key}"})
            assert key not in r.text
    secret = re.compile("|".join(re.escape(k.split("_", 2)[2]) for k in keys.values()))
    assert not secret.search(caplog.text)
    stored = Path(client.app.state.lh.settings.keys_file).read_text()
    assert not secret.search(stored)  # only hashes are stored


def test_mcp_tools_call_the_routes_with_the_callers_key(
    gw: tuple[TestClient, dict[str, str]],
) -> None:
    """The tools' in-process client carries the MCP request's key: the route it calls gets
    past authentication (here to the absent NATS), instead of a 401."""
    client, keys = gw
    headers = {
        "Authorization": f"Bearer {keys['reader']}",
        "Accept": "application/json, text/event-stream",
    }
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    call["params"] = {"name": "list_datasets", "arguments": {}}
    r = client.post("/mcp", json=call, headers=headers)
    assert r.status_code == 200, r.text
    text = r.json()["result"]["content"][0]["text"]
    assert "NATS is unreachable" in text and "unauthorized" not in text, text
    assert client.post("/mcp", json=call).status_code == 401
