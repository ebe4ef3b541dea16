"""``lakehouse mcp``: the MCP tools for an AI assistant, over stdio, against a gateway."""

import typer

from lakehouse.ops.cli.options import UrlOpt


def mcp(url: UrlOpt = None) -> None:
    """Serve the MCP tools (search_workers, run_sql, list_datasets, describe_dataset) over
    stdio, for an AI assistant to start as a subprocess. Every tool calls the gateway at
    --url; the gateway also serves them over streamable HTTP at <url>/mcp."""
    from lakehouse.client.http import Client, default_url
    from lakehouse.client.mcp import build_server

    base = url or default_url()
    build_server(lambda: Client(base)).run("stdio")


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp)
