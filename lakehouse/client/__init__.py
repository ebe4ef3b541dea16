"""Clients of a running gateway, for people and assistants: the typed HTTP client every one
of them goes through (``http.py``), the terminal verbs' rendering and the MCP server.

Talks to the gateway over HTTP only (never NATS), so it runs anywhere the gateway is
reachable. Imports ``schemas`` and nothing else of ours.
"""
