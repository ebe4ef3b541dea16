"""Worker kinds: one module per kind, holding a :class:`lakehouse.platform.runtime.Worker`
(handlers and their state only; the mechanics live in ``lakehouse.platform``).

May import ``lakehouse.platform``, ``lakehouse.tables``, ``lakehouse.vectors`` and ``schemas``;
nothing imports ``workers`` but the CLI that starts them (the gateway never does).

``KINDS`` maps each kind of the contract (``schemas.subjects.WORKER_KINDS``) to
``module:Class``; ``lakehouse worker NAME`` and ``lakehouse up`` start them. A
``module:Class`` path is accepted too (tests use it).
"""

from __future__ import annotations

import importlib

from lakehouse.platform.runtime import Worker

KINDS: dict[str, str] = {
    "catalog": "workers.catalog:CatalogWorker",
    "embed": "workers.embed:EmbedWorker",
    "ingest": "workers.ingest:IngestWorker",
    "query": "workers.query:QueryWorker",
    "vectors": "workers.vectors:VectorWorker",
}


def resolve(kind: str) -> type[Worker]:
    """The Worker class for a kind name or a ``module:Class`` path."""
    target = KINDS.get(kind, kind)
    if ":" not in target:
        known = ", ".join(sorted(KINDS)) or "none yet"
        raise KeyError(f"unknown worker kind {kind!r} (known: {known})")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Worker)):
        raise TypeError(f"{target} is not a Worker subclass")
    return cls
