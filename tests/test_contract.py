"""The NATS contract: the AsyncAPI 3 document built from ``schemas/`` through FastStream
declarations, the JSON Schema export of every model, and the gateway's ``/asyncapi`` routes.

The subjects and models are found by introspecting ``schemas/`` here, independently of the
code under test, so a subject or model added later without its declaration fails a test.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
from pydantic import BaseModel

from gateway.app import create_app
from lakehouse.platform.config import Settings
from lakehouse.platform.procs import REPO_ROOT
from schemas import subjects as S
from schemas.asyncapi import document
from workers import KINDS, resolve

PARAM = re.compile(r"\{(\w+)\}")


def subject_constants() -> dict[str, str]:
    """Every subject constant of ``schemas.subjects`` (a string under ``lakehouse.``)."""
    return {
        name: value
        for name, value in vars(S).items()
        if name.isupper() and isinstance(value, str) and value.startswith(f"{S.PREFIX}.")
    }


def subject_functions() -> dict[str, str]:
    """Every subject-building function, called with ``{argument}`` placeholders."""
    found = {}
    for name, fn in vars(S).items():
        if inspect.isfunction(fn) and fn.__module__ == S.__name__:
            value = fn(*(f"{{{p}}}" for p in inspect.signature(fn).parameters))
            if isinstance(value, str) and value.startswith(f"{S.PREFIX}."):
                found[name] = value
    return found


def resolve_ref(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_every_subject_has_a_channel_with_described_parameters() -> None:
    doc = document()
    assert doc["asyncapi"].startswith("3.")
    constants, functions = subject_constants(), subject_functions()
    assert {"INGEST_REQUESTS", "QUERY_SQL", "HEALTH_PING", "VECTORS_PREFIX"} <= set(constants)
    assert {"catalog_events", "vectors", "search", "job", "dlq"} <= set(functions)
    channels = {c["address"]: c for c in doc["channels"].values() if c.get("address")}

    missing = [
        f"{name} = {value!r}"
        for name, value in constants.items()
        if value not in channels and not any(a.startswith(f"{value}.") for a in channels)
    ]
    missing += [f"{name}() -> {addr!r}" for name, addr in functions.items() if addr not in channels]
    assert not missing, f"subjects without a channel in the AsyncAPI document: {missing}"

    for addr, channel in channels.items():
        names = PARAM.findall(addr)
        assert sorted(channel.get("parameters", {})) == sorted(names), addr
        for name in names:
            assert channel["parameters"][name].get("description"), f"{addr}: {name}"
    assert channels[functions["dlq"]]["parameters"]["kind"]["enum"] == list(S.WORKER_KINDS)


def test_every_request_reply_subject_names_its_reply() -> None:
    """The subjects the workers serve (read from their declarations) and the health ping each
    have a receive operation with an AsyncAPI 3 ``reply`` naming its schema."""
    services = {svc.subject for kind in KINDS for svc in resolve(kind)(cast(Any, None)).serves()}
    assert {S.QUERY_SQL, S.CATALOG_REGISTER, S.EMBED_TEXT} <= services
    doc = document()
    schemas = doc["components"]["schemas"]

    def pattern(address: str) -> str:  # lakehouse.search.{index} -> lakehouse.search.*
        return PARAM.sub("*", address)

    for subject in [*sorted(services), S.HEALTH_PING]:
        ops = [
            op
            for op in doc["operations"].values()
            if op["action"] == "receive"
            and pattern(resolve_ref(doc, op["channel"]["$ref"]).get("address") or "")
            == pattern(subject)
        ]
        assert len(ops) == 1, f"{subject}: {len(ops)} receive operations"
        reply = ops[0].get("reply")
        assert reply and reply["messages"], f"{subject}: no reply"
        named = []
        for ref in reply["messages"]:  # messages of the reply's channel, each a schema
            assert ref["$ref"].startswith(reply["channel"]["$ref"] + "/messages/")
            message = resolve_ref(doc, ref["$ref"])
            while "$ref" in message:
                message = resolve_ref(doc, message["$ref"])
            payload = message["payload"]
            if "$ref" in payload:
                name = payload["$ref"].rsplit("/", 1)[1]
                assert name in schemas, f"{subject}: reply schema {name} missing"
                named.append(name)
            else:  # a binary reply says what it is
                assert message["contentType"] != "application/json" and message["description"]
        assert named, f"{subject}: no reply schema"
        if subject != S.HEALTH_PING:  # the runtime answers a failed request with an ErrorBody
            assert "ErrorBody" in named, subject


def test_document_references_resolve_and_binary_payloads_are_described() -> None:
    doc = document()
    for ref in refs(doc):
        resolve_ref(doc, ref)
    for name, op in doc["operations"].items():
        for m in op["messages"]:
            assert m["$ref"].startswith(op["channel"]["$ref"] + "/messages/"), name
    messages = doc["components"]["messages"]
    assert all("correlationId" not in m for m in messages.values())
    binary = {
        m["name"]: m
        for m in messages.values()
        if m.get("contentType", "application/json") != "application/json"
    }
    assert binary["VectorBatch"]["contentType"] == "application/vnd.apache.arrow.stream"
    assert "Arrow IPC" in binary["VectorBatch"]["description"]
    assert "Lakehouse-Query" in binary["SearchVector"]["headers"]["required"]
    assert "float32" in binary["SearchVector"]["description"]
    assert binary["SqlArrow"]["contentType"] == "application/vnd.apache.arrow.stream"


def schema_models() -> set[str]:
    """Class names of every pydantic model defined at the top of a ``schemas/*.py`` module,
    read from the source."""
    names = set()
    for path in sorted((REPO_ROOT / "schemas").glob("*.py")):
        module = importlib.import_module(
            "schemas" if path.stem == "__init__" else f"schemas.{path.stem}"
        )
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                obj = getattr(module, node.name)
                if isinstance(obj, type) and issubclass(obj, BaseModel):
                    names.add(node.name)
    return names


def test_lakehouse_schemas_writes_every_model_and_the_asyncapi_document(tmp_path: Path) -> None:
    out = tmp_path / "contract"
    done = subprocess.run(
        [sys.executable, "-m", "lakehouse", "schemas", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    models = schema_models()
    assert {"IngestRequest", "IndexSpec", "EmbedRequest", "SearchRequest", "PartitionReply"} <= (
        models
    )
    assert {p.name for p in out.iterdir()} == {f"{m}.json" for m in models} | {"asyncapi.json"}
    for name in models:
        schema = json.loads((out / f"{name}.json").read_text())
        assert schema["title"] == name
        assert "properties" in schema or "$defs" in schema, name
        for model in [schema, *schema.get("$defs", {}).values()]:
            for field, prop in model.get("properties", {}).items():
                assert prop.get("description"), f"undocumented field {model['title']}.{field}"
    assert json.loads((out / "asyncapi.json").read_text()) == document()


async def test_gateway_serves_the_document_and_its_page(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings())  # no lifespan: these routes need neither NATS nor storage
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        r = await c.get("/asyncapi.json")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == document()
        page = await c.get("/asyncapi")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<html" in page.text and "Lakehouse AsyncAPI" in page.text
        assert S.INGEST_REQUESTS in page.text  # the document is embedded in the page
        paths = (await c.get("/openapi.json")).json()["paths"]
    for path in ("/asyncapi.json", "/asyncapi"):
        assert paths[path]["get"]["responses"]["200"]["description"]
