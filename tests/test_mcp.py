"""The MCP server for assistants, end to end with the SDK's own client: ``lakehouse mcp``
over stdio, and the gateway's ``/mcp`` over streamable HTTP, against a real stack with an
auto-embedded dataset; and the mount's Host/Origin checks, in-process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client as McpClient
from mcp import StdioServerParameters
from mcp.types import CallToolResult, TextContent

from gateway.app import create_app
from gateway.mcp import transport_security
from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack, project_env
from lakehouse.platform.config import load_settings
from lakehouse.platform.procs import REPO_ROOT, free_port

KINDS = ("catalog", "ingest", "query", "embed", "vectors")
TOOLS = {"search_workers", "run_sql", "list_datasets", "describe_dataset"}

pytestmark = pytest.mark.stack(kinds=KINDS, shared=True)
slow = pytest.mark.slow  # the tests on a stack (one per module: ~6 s to start, 2 cores)

PEOPLE = [
    ("p1", "Ada", "electrician", "Chicago", "IL", 0.95),
    ("p2", "Ben", "electrician", "Peoria", "IL", 0.80),
    ("p3", "Cy", "electrician", "Houston", "TX", 0.99),
    ("p4", "Di", "forklift operator", "Joliet", "IL", 0.91),
    ("p5", "Ed", "forklift operator", "Dallas", "TX", 0.70),
    ("p6", "Flo", "registered nurse", "Springfield", "IL", 0.97),
    ("p7", "Gus", "registered nurse", "Austin", "TX", 0.85),
    ("p8", "Hal", "welder", "Rockford", "IL", 0.60),
]
BIO = "Worked {years} years as a {role} around {city}; safety record clean and references on file. "


def people_csv() -> bytes:
    lines = ["id,name,role,city,state,reliability,bio"]
    for i, (pid, name, role, city, state, rel) in enumerate(PEOPLE):
        bio = (BIO.format(years=i + 2, role=role, city=city) * 3).strip()
        lines.append(f"{pid},{name},{role},{city},{state},{rel},{bio}")
    return ("\n".join(lines) + "\n").encode()


_ingested: set[str] = set()


@pytest.fixture
def gateway(stack: Stack) -> str:
    """The stack's base URL, with ``people`` ingested and every row embedded (once)."""
    if stack.base not in _ingested:
        with httpx.Client(base_url=stack.base, timeout=120) as c:
            r = c.post(
                "/v1/ingest",
                params={
                    "name": "people",
                    "embed_index": "people",
                    "id_column": "id",
                    "text_template": "{role} in {city}",
                },
                content=people_csv(),
                headers={"content-type": "text/csv"},
            )
            assert r.status_code == 200, r.text
            wait_until(
                lambda: c.get("/v1/vectors/indexes/people").json().get("count") == len(PEOPLE),
                timeout=60,
                interval=0.2,
                what="people embedded",
            )
        _ingested.add(stack.base)
    return stack.base


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


@slow
async def test_stdio_lists_the_tools_and_answers_them(gateway: str) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "lakehouse", "mcp", "--url", gateway],
        env=project_env(),
        cwd=REPO_ROOT,
    )
    async with McpClient(params) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert set(tools) == TOOLS
        search = tools["search_workers"].input_schema
        assert set(search["properties"]) == {"text", "filters", "k", "index"}
        assert search["required"] == ["text"]
        assert tools["run_sql"].input_schema["required"] == ["sql"]
        assert tools["describe_dataset"].input_schema["properties"]["name"]["type"] == "string"
        assert all(t.output_schema for t in tools.values())

        out = ok(await mcp.call_tool("run_sql", {"sql": "SELECT count(*) AS n FROM people"}))
        assert out["columns"] == [{"name": "n", "type": "BIGINT"}]
        assert out["rows"] == [[len(PEOPLE)]] and out["truncated"] is False

        listed = {d["name"]: d for d in ok(await mcp.call_tool("list_datasets"))["datasets"]}
        assert listed["people"]["row_count"] == len(PEOPLE)
        assert [c["name"] for c in listed["people"]["columns"]][:3] == ["id", "name", "role"]

        described = ok(await mcp.call_tool("describe_dataset", {"name": "people"}))
        assert {c["name"]: c["type"] for c in described["columns"]}["reliability"] == "float64"
        assert described["row_count"] == len(PEOPLE) and described["vector_indexes"] == ["people"]
        assert [h["revision"] for h in described["history"]][-1] == described["revision"]
        assert described["history"][-1]["row_count"] == len(PEOPLE)

        found = ok(await mcp.call_tool("search_workers", {"text": "nurse", "k": 3}))
        assert found["index"] == "people" and found["dataset"] == "people"
        hits = found["hits"]
        assert len(hits) == 3
        assert {h["id"] for h in hits[:2]} == {"p6", "p7"}  # the two registered nurses
        assert hits[0]["distance"] <= hits[1]["distance"] <= hits[2]["distance"]
        assert hits[0]["score"] == pytest.approx(1 - hits[0]["distance"], abs=1e-5)
        if hits[0]["row"] is not None:  # the gateway sends rows (and snippets) with hits
            assert hits[0]["row"]["role"] == "registered nurse"
            assert hits[0]["snippet"]["column"] == "bio" and hits[0]["snippet"]["marks"]


@slow
async def test_http_at_mcp_searches_with_a_filter_and_runs_sql(gateway: str) -> None:
    async with McpClient(f"{gateway}/mcp") as mcp:
        found = ok(
            await mcp.call_tool(
                "search_workers",
                {"text": "electrician", "filters": "state = 'IL' AND reliability >= 0.9"},
            )
        )
        assert found["filter_matches"] == 3  # p1, p4, p6
        assert found["hits"][0]["id"] == "p1"
        assert {h["id"] for h in found["hits"]} <= {"p1", "p4", "p6"}
        out = ok(await mcp.call_tool("run_sql", {"sql": "SELECT name FROM people WHERE id = 'p3'"}))
        assert out["rows"] == [["Cy"]]


@slow
async def test_gateway_errors_are_tool_errors_with_the_reason(gateway: str) -> None:
    async with McpClient(f"{gateway}/mcp") as mcp:
        bad = error_text(await mcp.call_tool("run_sql", {"sql": "SELECT nope FROM people"}))
        assert 'Referenced column "nope" not found' in bad, bad  # DuckDB's own message
        missing = error_text(await mcp.call_tool("describe_dataset", {"name": "nobody"}))
        assert "not found" in missing, missing
        wrong = error_text(await mcp.call_tool("search_workers", {"text": "x", "index": "zz"}))
        assert "not found" in wrong, wrong


async def test_mount_accepts_loopback_hosts_only_and_stays_out_of_openapi(tmp_path: Path) -> None:
    """The gateway on its default loopback bind: the MCP SDK's DNS-rebinding checks (Host
    127.0.0.1/localhost/[::1] with any port, same for Origin). No NATS here: the tool's
    in-process call of /v1/sql answers 503, which comes back as the tool's error."""
    settings = load_settings(
        tmp_path / "none.toml",
        data_dir=tmp_path / "data",
        nats={"url": f"nats://127.0.0.1:{free_port()}"},  # nothing listens there
    )
    app = create_app(settings)
    assert not [p for p in app.openapi()["paths"] if p.startswith("/mcp")]
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"accept": "application/json, text/event-stream"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:3110", timeout=30
        ) as c,
    ):
        r = await c.post("/mcp", json=listing, headers=accept)
        assert r.status_code == 200, r.text
        assert {t["name"] for t in r.json()["result"]["tools"]} == TOOLS
        for host in ("localhost:3110", "[::1]:8080", "localhost"):
            r = await c.post("/mcp", json=listing, headers={**accept, "host": host})
            assert r.status_code == 200, (host, r.text)
        r = await c.post("/mcp", json=listing, headers={**accept, "host": "evil.example:3110"})
        assert r.status_code == 421
        evil = {**accept, "origin": "http://evil.example"}
        assert (await c.post("/mcp", json=listing, headers=evil)).status_code == 403
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "run_sql", "arguments": {"sql": "SELECT 1"}},
        }
        result = (await c.post("/mcp", json=call, headers=accept)).json()["result"]
        assert result["isError"] is True
        assert "NATS is unreachable" in result["content"][0]["text"]
    # Bound to all interfaces (deploy/compose.yaml), its names are unknown: no Host check.
    assert not transport_security("0.0.0.0").enable_dns_rebinding_protection
