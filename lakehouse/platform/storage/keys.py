"""Where everything lives in object storage: each key prefix and key shape, written once.

Data objects are immutable and content addressed; everything whose name starts with ``_``
is the platform's own bookkeeping (mirrors, snapshots, dead-letter payloads).
"""

from __future__ import annotations

DATASETS = "datasets/"
"""Parquet data objects: ``datasets/<name>/<fingerprint>/<sha256>.parquet``; an upsert's delete
sets: ``datasets/<name>/_deletes/<sha256>.parquet``."""
STAGING = "staging/"
"""Uploaded CSVs waiting for an ingest worker: ``staging/<job>.csv``, or a large upload still
arriving: ``staging/<job>.parts/`` holding ``000000``, ``000001``, ... and ``end`` (deleted
after)."""
MANIFESTS = "_catalog/manifests/"
"""Each dataset's current manifest mirrored as Parquet (``lakehouse catalog restore``)."""
VECTORS = "_vectors/"
"""HNSW partition snapshots: ``_vectors/<index>/<partition>/...``; the hashes of the texts an
index's items were embedded from: ``_vectors/<index>/texts/<tag>.parquet``."""
DLQ = "_dlq/"
"""Payloads of dead letters too large to carry inline: ``_dlq/<kind>/<stream>-<tag>.bin``."""

GC_SWEPT = (DATASETS, STAGING)
"""What ``lakehouse gc`` may delete once no manifest references it."""


def data_object(dataset: str, fingerprint: str, digest: str) -> str:
    return f"{DATASETS}{dataset}/{fingerprint}/{digest}.parquet"


def delete_set(dataset: str, digest: str) -> str:
    return f"{DATASETS}{dataset}/_deletes/{digest}.parquet"


def staged_csv(job_id: str) -> str:
    return f"{STAGING}{job_id}.csv"


def staged_parts(job_id: str) -> str:
    """The prefix of an upload staged in parts (see :func:`upload_part`, :func:`upload_end`)."""
    return f"{STAGING}{job_id}.parts/"


def upload_part(prefix: str, n: int) -> str:
    return f"{prefix}{n:06d}"


def upload_end(prefix: str) -> str:
    """Written after the last part: JSON ``{"parts": n, "bytes": total}`` or ``{"error": ...}``."""
    return f"{prefix}end"


def manifest(dataset: str) -> str:
    return f"{MANIFESTS}{dataset}.parquet"


def index_snapshots(index: str, partition: int | None = None) -> str:
    """The prefix of one partition's snapshot, or of every partition of an index."""
    return f"{VECTORS}{index}/" if partition is None else f"{VECTORS}{index}/{partition}/"


def embedded_texts(index: str, tag: str | None = None) -> str:
    """What an index's items were embedded from (content hashes): the prefix, or one file."""
    prefix = f"{VECTORS}{index}/texts/"
    return prefix if tag is None else f"{prefix}{tag}.parquet"


def dead_letter_payload(kind: str, stream: str, tag: str) -> str:
    return f"{DLQ}{kind}/{stream}-{tag}.bin"
