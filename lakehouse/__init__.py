"""Lakehouse shared core: config, NATS bus, worker runtime, storage, CLI."""

__version__ = "0.1.0"
