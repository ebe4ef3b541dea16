"""Mechanics every process uses: settings, logging, errors, the NATS bus and request/reply,
the worker runtime, object storage and its key layout, walking a stream, leases, the backoff
schedule and fault points.

May import: ``lakehouse.platform`` and ``schemas`` only (never the domains or the tools).
"""
