"""Worker kinds. Each kind is one module holding a :class:`lakehouse.runtime.Worker`.

``KINDS`` maps the kind name to ``module:Class``; ``lakehouse worker NAME`` and
``lakehouse up`` start them. A ``module:Class`` path is accepted too (tests use it).
"""

from __future__ import annotations

import importlib

from lakehouse.runtime import Worker

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
