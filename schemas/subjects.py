"""Every NATS subject and stream name used by the project, in one place.

Dataset and index names are subject tokens and SQL identifiers: ``[A-Za-z0-9_-]{1,128}``.
:data:`Name` is the one place that rule lives; models and HTTP parameters use it.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

PREFIX = "lakehouse"

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
NAME_RE = re.compile(NAME_PATTERN)

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, min_length=1, max_length=128)]
"""A dataset or index name: 1-128 of ``[A-Za-z0-9_-]`` (a NATS subject token and a plain SQL
identifier). ``StringConstraints`` rather than ``Field`` so that the same type serves model
fields and FastAPI path/query parameters; the JSON Schema carries the pattern and lengths."""

# The worker kinds: each is a process type with its own queue group, health subject and
# dead-letter subject (``workers/<kind>.py`` implements it).
WORKER_KINDS: tuple[str, ...] = ("catalog", "embed", "ingest", "query", "vectors")

# JetStream work queue: gateway, upstream -> ingest workers.
INGEST_REQUESTS = f"{PREFIX}.ingest.requests"
# Request/reply: ingest worker, gateway -> catalog worker.
CATALOG_REGISTER = f"{PREFIX}.catalog.register"
# Request/reply: gateway -> catalog worker (reads and deletes).
CATALOG_GET = f"{PREFIX}.catalog.get"
CATALOG_LIST = f"{PREFIX}.catalog.list"
CATALOG_HISTORY = f"{PREFIX}.catalog.history"
CATALOG_DELETE = f"{PREFIX}.catalog.delete"
# Request/reply: gateway, operators -> catalog worker (rewrites a dataset's objects).
CATALOG_COMPACT = f"{PREFIX}.catalog.compact"
# JetStream, full history: catalog worker -> query workers, anyone.
CATALOG_EVENTS_PREFIX = f"{PREFIX}.catalog.events"
# Request/reply: gateway -> query workers.
QUERY_SQL = f"{PREFIX}.query.sql"
QUERY_ROWS = f"{PREFIX}.query.rows"
# JetStream work queue: gateway, ingest worker, upstream -> embed workers.
EMBED_REQUESTS_PREFIX = f"{PREFIX}.embed.requests"
# Request/reply: gateway -> embed workers (query-time, cached).
EMBED_TEXT = f"{PREFIX}.embed.text"
# JetStream, replayable: embed workers, upstream -> the vector worker owning a partition.
VECTORS_PREFIX = f"{PREFIX}.vectors"
# JetStream, last per subject: index definitions (durable; every worker learns them on start).
INDEXES_PREFIX = f"{PREFIX}.indexes"
# Scatter/gather: gateway -> every partition owner.
SEARCH_PREFIX = f"{PREFIX}.search"
# Job status updates: workers -> gateway, CLI.
JOBS_PREFIX = f"{PREFIX}.jobs"
# JetStream: any worker -> operators.
DLQ_PREFIX = f"{PREFIX}.dlq"
# Core NATS, no queue group: every live process answers with its HealthReply.
HEALTH_PING = f"{PREFIX}.health.ping"

# Stream names.
STREAM_INGEST = "LAKEHOUSE_INGEST"
STREAM_CATALOG = "LAKEHOUSE_CATALOG"
STREAM_EMBED = "LAKEHOUSE_EMBED"
STREAM_VECTORS = "LAKEHOUSE_VECTORS"
STREAM_JOBS = "LAKEHOUSE_JOBS"
STREAM_DLQ = "LAKEHOUSE_DLQ"
STREAM_INDEXES = "LAKEHOUSE_INDEXES"
# JetStream key-value bucket of partition leases (and vector worker membership).
KV_LEASES = "lakehouse_leases"


def catalog_events(dataset: str) -> str:
    return f"{CATALOG_EVENTS_PREFIX}.{dataset}"


def embed_requests(index: str) -> str:
    return f"{EMBED_REQUESTS_PREFIX}.{index}"


def vectors(index: str, partition: int) -> str:
    return f"{VECTORS_PREFIX}.{index}.{partition}"


def search(index: str) -> str:
    return f"{SEARCH_PREFIX}.{index}"


def index_def(index: str) -> str:
    return f"{INDEXES_PREFIX}.{index}"


def job(job_id: str) -> str:
    return f"{JOBS_PREFIX}.{job_id}"


def dlq(kind: str) -> str:
    return f"{DLQ_PREFIX}.{kind}"


def all_under(prefix: str) -> str:
    """The wildcard subject covering every subject under ``prefix``."""
    return f"{prefix}.>"
