"""What FastStream sees: a never-started ``NatsBroker`` with one declaration per subject of
:mod:`schemas.subjects` (its payload model, queue group, stream), the payloads with no model
elsewhere in ``schemas/``, and the binary payload forms :mod:`schemas.asyncapi.document` adds.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from faststream.nats import JStream, NatsBroker
from pydantic import BaseModel

from schemas import subjects as S
from schemas.catalog import (
    CatalogEvent,
    CompactRequest,
    DatasetList,
    DeleteReply,
    History,
    ListRequest,
    Manifest,
    NameRequest,
    RegisterReply,
    RegisterRequest,
)
from schemas.ingest import EmbedProgress, IngestRequest, JobStatus
from schemas.messages import (
    PART_HEADER,
    STATUS_HEADER,
    DeadLetter,
    ErrorBody,
    HealthReply,
)
from schemas.query import RowsReply, RowsRequest, SqlRequest, SqlResult
from schemas.vectors import (
    QUERY_HEADER,
    EmbedRequest,
    EmbedText,
    EmbedTextReply,
    IndexSpec,
    SearchReply,
    SearchRequest,
)

TITLE = "Lakehouse"
SERVER_URL = "nats://127.0.0.1:4222"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
OCTETS = "application/octet-stream"

DESCRIPTION = f"""
The NATS contract of Lakehouse: what upstream systems may publish, what they can subscribe to,
and what every request is answered with. Generated from the pydantic models of `schemas/`
(`lakehouse schemas DIR` writes this document and the JSON Schema of every model).

- JSON payloads carry `v`, their schema version; readers ignore fields they do not know.
- Subjects backed by a JetStream stream are published with JetStream and a deterministic
  `Nats-Msg-Id` header: a repeat within the stream's 2-minute duplicate window is stored once.
- Request/reply subjects are core NATS requests served by a queue group (one replica answers).
  An error reply has the `{STATUS_HEADER}` header (an HTTP status) and `{{"error", "detail"}}`;
  a reply larger than the server's max_payload comes in parts, each with
  `{PART_HEADER}: i/n` (concatenate the bodies in order). With no replier the server answers
  a no-responders status (`Status: 503`).
- Dataset and index names, used as subject tokens: `[A-Za-z0-9_-]{{1,128}}`.
"""


# ---- declarations ------------------------------------------------------------------------


def address(subject: Callable[..., str]) -> str:
    """A subject function's address with ``{parameter}`` placeholders named after its
    arguments: ``vectors`` -> ``lakehouse.vectors.{index}.{partition}``."""
    names = inspect.signature(subject).parameters
    return subject(*(f"{{{name}}}" for name in names))


@dataclass(frozen=True)
class Binary:
    """A non-JSON message: its content type, headers and what the bytes are."""

    name: str
    content_type: str
    description: str
    headers: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None


REPLY_PARTS = {
    PART_HEADER: {
        "type": "string",
        "pattern": r"^[0-9]+/[0-9]+$",
        "description": "Part i of n of a reply (large replies come in parts).",
        "examples": ["1/1"],
    }
}

ARROW_RESULT = Binary(
    "SqlArrow",
    ARROW_STREAM,
    "Reply to `lakehouse.query.sql` with `format: arrow`: the result as one Arrow IPC "
    "stream; the schema metadata `lakehouse.truncated` is `true` when the row cap cut it.",
)
VECTOR_BATCH = Binary(
    "VectorBatch",
    ARROW_STREAM,
    "One Arrow IPC stream of one record batch with the columns `id` (string), `op` "
    '(string: "upsert" | "delete"), `vector` (fixed_size_list<float32>[dim] of the index, null '
    "for deletes) and `metadata` (string: a JSON object, or null). Every id must belong to "
    "this partition: blake2b(id, digest_size=8) read as a big-endian integer, mod the "
    "index's `partitions`. Upserts replace an id's vector and metadata. A batch of the wrong "
    "dimension is dead-lettered on `lakehouse.dlq.vectors` and skipped. "
    "`encode()` of `lakehouse/vectors/batches.py` writes this format.",
    headers={
        "Nats-Msg-Id": {
            "type": "string",
            "description": "Deterministic per batch (e.g. from its content): a republished "
            "batch is stored once.",
        }
    },
)
SEARCH_VECTOR = Binary(
    "SearchVector",
    OCTETS,
    "Binary form of the search request (what the gateway sends for a plain top-k): the "
    "query vector as little-endian float32 bytes, `dim` of them. The other fields travel as "
    f"JSON in the `{QUERY_HEADER}` header. Only `op: search`, without `allowed_ids`.",
    headers={
        "type": "object",
        "required": [QUERY_HEADER],
        "properties": {
            QUERY_HEADER: {
                "type": "string",
                "contentMediaType": "application/json",
                "description": 'JSON object `{"k": int, "ef": int | null}` (k defaults to 10).',
                "examples": ['{"k": 10, "ef": null}'],
            }
        },
    },
)
EMPTY_PING = Binary(
    "HealthPing",
    OCTETS,
    "Empty body; publish with a reply subject and gather the answers for a short window.",
    payload={"type": "string", "maxLength": 0},
)


@dataclass(frozen=True)
class Declared:
    """What :func:`document` adds to one FastStream declaration (by its title)."""

    replies: tuple[type[BaseModel] | Binary, ...] = ()
    headers: dict[str, Any] | None = None  # JSON message headers
    binary: Binary | None = None  # the request/payload is binary: replaces the JSON message
    extra: tuple[Binary, ...] = ()  # further accepted forms of the payload


DECLARED: dict[str, Declared] = {}

broker = NatsBroker(
    SERVER_URL,
    description="The NATS server of `lakehouse up` (port 4222 unless `--nats-port`/"
    "`nats.url` says otherwise). JetStream holds the streams named per channel.",
)


def _declared_only() -> NoReturn:
    raise RuntimeError("declaration only: the lakehouse runtime serves this subject")


def _msg_id(what: str) -> dict[str, Any]:
    return {"Nats-Msg-Id": {"type": "string", "description": what}}


# Ingest --------------------------------------------------------------------------------------


@broker.subscriber(
    S.INGEST_REQUESTS,
    stream=JStream(S.STREAM_INGEST, declare=False),
    durable="ingest",
    pull_sub=True,
    title="ingest.requests",
    description="Turn a CSV already in storage into a registered dataset. Stream "
    f"{S.STREAM_INGEST} (work queue: removed once acked), durable consumer `ingest` shared "
    "by every ingest worker. Producers: the gateway (`POST /v1/ingest`) and upstream systems. "
    "Progress and the result arrive on `lakehouse.jobs.<job_id>`. After max_deliver "
    "deliveries or a permanent error (bad CSV, bad name) the request is dead-lettered on "
    "`lakehouse.dlq.ingest` and the job ends `failed`.",
)
async def ingest_request(request: IngestRequest) -> None:
    _declared_only()


DECLARED["ingest.requests"] = Declared(
    headers=_msg_id("The job_id: a repeated request is stored once.")
)


# Catalog (request/reply, queue group lakehouse.catalog) --------------------------------------

CATALOG_QUEUE = f"{S.PREFIX}.catalog"


@broker.subscriber(
    S.CATALOG_REGISTER,
    queue=CATALOG_QUEUE,
    title="catalog.register",
    description="Request/reply: add (`append`) or replace a dataset's objects; the catalog "
    "worker appends a `registered` event on `lakehouse.catalog.events.<name>`. Requesters: "
    "ingest workers and the gateway. Idempotent by `request_id`; 409 on a schema "
    "fingerprint conflict.",
)
async def catalog_register(request: RegisterRequest) -> RegisterReply:
    _declared_only()


DECLARED["catalog.register"] = Declared(replies=(RegisterReply, ErrorBody))


@broker.subscriber(
    S.CATALOG_GET,
    queue=CATALOG_QUEUE,
    title="catalog.get",
    description="Request/reply: a dataset's current manifest (404 when there is none).",
)
async def catalog_get(request: NameRequest) -> Manifest:
    _declared_only()


DECLARED["catalog.get"] = Declared(replies=(Manifest, ErrorBody))


@broker.subscriber(
    S.CATALOG_LIST,
    queue=CATALOG_QUEUE,
    title="catalog.list",
    description="Request/reply: the manifest of every registered dataset.",
)
async def catalog_list(request: ListRequest) -> DatasetList:
    _declared_only()


DECLARED["catalog.list"] = Declared(replies=(DatasetList, ErrorBody))


@broker.subscriber(
    S.CATALOG_HISTORY,
    queue=CATALOG_QUEUE,
    title="catalog.history",
    description="Request/reply: every event of one dataset with its stream sequence (404 "
    "when it was never registered).",
)
async def catalog_history(request: NameRequest) -> History:
    _declared_only()


DECLARED["catalog.history"] = Declared(replies=(History, ErrorBody))


@broker.subscriber(
    S.CATALOG_DELETE,
    queue=CATALOG_QUEUE,
    title="catalog.delete",
    description="Request/reply: delete a dataset (appends a `deleted` event; 404 when "
    "there is no such dataset).",
)
async def catalog_delete(request: NameRequest) -> DeleteReply:
    _declared_only()


DECLARED["catalog.delete"] = Declared(replies=(DeleteReply, ErrorBody))


@broker.subscriber(
    S.CATALOG_COMPACT,
    queue=CATALOG_QUEUE,
    title="catalog.compact",
    description="Request/reply: rewrite a dataset's rows without its delete sets into new "
    "objects (a `compact` revision; the rows do not change). 404 when there is no such dataset.",
)
async def catalog_compact(request: CompactRequest) -> RegisterReply:
    _declared_only()


DECLARED["catalog.compact"] = Declared(replies=(RegisterReply, ErrorBody))


broker.publisher(
    address(S.catalog_events),
    schema=CatalogEvent,
    title="catalog.events",
    description=f"Every change of a dataset. Stream {S.STREAM_CATALOG} keeps every event "
    "(full history, the source of truth for rebuilds). Producer: the catalog worker only "
    "(each append expects the subject's last sequence, so racing replicas cannot both win). "
    "Consumers: query workers (last per subject, then every new event), `lakehouse replay` "
    "and `verify`, any upstream system that follows datasets.",
)

# Query ---------------------------------------------------------------------------------------


@broker.subscriber(
    S.QUERY_SQL,
    queue=f"{S.PREFIX}.query",
    title="query.sql",
    description="Request/reply: one read-only SELECT over the datasets, sandboxed, with a "
    "row cap and a statement timeout. `min_catalog_seq` (a register reply's `catalog_seq`) "
    "waits until that catalog event is applied (read-your-writes).",
)
async def query_sql(request: SqlRequest) -> SqlResult | bytes:
    _declared_only()


DECLARED["query.sql"] = Declared(replies=(SqlResult, ARROW_RESULT, ErrorBody))


@broker.subscriber(
    S.QUERY_ROWS,
    queue=f"{S.PREFIX}.query",
    title="query.rows",
    description="Request/reply: a dataset's rows by id (the rows shown with search hits), "
    "from the query worker's in-memory copy of the dataset.",
)
async def query_rows(request: RowsRequest) -> RowsReply:
    _declared_only()


DECLARED["query.rows"] = Declared(replies=(RowsReply, ErrorBody))

# Vectors -------------------------------------------------------------------------------------


@broker.subscriber(
    address(S.embed_requests),
    stream=JStream(S.STREAM_EMBED, declare=False),
    durable="embed",
    pull_sub=True,
    title="embed.requests",
    description="Texts to embed and upsert into an index. Stream "
    f"{S.STREAM_EMBED} (work queue), durable consumer `embed` shared by every embed worker. "
    "Producers: the gateway (text items added to an index), ingest workers (auto-embed) "
    "and upstream systems. The embed worker publishes the vectors on "
    "`lakehouse.vectors.<index>.<partition>` and, with `job_id`, one "
    "`lakehouse.jobs.<job_id>.embed.<batch_id>`; items the model rejects are dead-lettered "
    "on `lakehouse.dlq.embed` with the reason.",
)
async def embed_request(request: EmbedRequest) -> None:
    _declared_only()


DECLARED["embed.requests"] = Declared(
    headers=_msg_id("The batch_id: a repeated batch is stored once.")
)


@broker.subscriber(
    S.EMBED_TEXT,
    queue=f"{S.PREFIX}.embed",
    title="embed.text",
    description="Request/reply: query-time embeddings, served from an LRU cache in the "
    "embed worker (503 when the model provider is unreachable).",
)
async def embed_text(request: EmbedText) -> EmbedTextReply:
    _declared_only()


DECLARED["embed.text"] = Declared(replies=(EmbedTextReply, ErrorBody))


@broker.subscriber(
    address(S.vectors),
    stream=JStream(S.STREAM_VECTORS, declare=False),
    title="vectors",
    description="Binary vector batches of one partition of an index. Stream "
    f"{S.STREAM_VECTORS} keeps every batch (replayed to rebuild indexes). Producers: embed "
    "workers, the gateway (vector items and deletes) and upstream systems. Consumer: the "
    "vector worker holding the partition's lease (it replays the subject in order).",
)
async def vector_batch(batch: bytes) -> None:
    _declared_only()


DECLARED["vectors"] = Declared(binary=VECTOR_BATCH)


broker.publisher(
    address(S.index_def),
    schema=IndexSpec,
    title="indexes",
    description="Vector index definitions: the last message of a subject is the index's "
    f"current definition (`deleted: true` is a tombstone). Stream {S.STREAM_INDEXES} "
    "(last 16 per index). Producers: the gateway (index create and delete) and "
    "ingest workers (auto-embed creates a missing index), expecting the subject's last "
    "sequence. Every worker reads the last one on demand; vector workers and the gateway "
    "watch `lakehouse.indexes.>` for changes.",
)


@broker.subscriber(
    address(S.search),
    title="search",
    description="Scatter/gather on core NATS, no queue group: every vector worker answers "
    "with the partitions of the index it owns (an empty list when none); the requester "
    "merges replies until every partition is covered or its timeout passes. Two request "
    f"forms: JSON (`SearchRequest`) or a binary float32 body with `{QUERY_HEADER}`.",
)
async def search(request: SearchRequest) -> SearchReply:
    _declared_only()


DECLARED["search"] = Declared(replies=(SearchReply, ErrorBody), extra=(SEARCH_VECTOR,))

# Jobs, dead letters, health ------------------------------------------------------------------

broker.publisher(
    address(S.job),
    schema=JobStatus,
    title="jobs",
    description="Status updates of a job; the last one is its state. Stream "
    f"{S.STREAM_JOBS} (last 8 per job, kept 7 days). Producers: the gateway (`queued`) and "
    "ingest workers (`running` with progress, then `succeeded` with the result or `failed` "
    "with the error). Subscribe before publishing the request to see every update.",
)

broker.publisher(
    f"{address(S.job)}.embed.{{batch_id}}",
    schema=EmbedProgress,
    title="jobs.embed",
    description="Auto-embed progress of a job: one message per embed batch done (stream "
    f"{S.STREAM_JOBS}). Producer: embed workers.",
)

broker.publisher(
    address(S.dlq),
    schema=DeadLetter,
    title="dlq",
    description="Dead letters: messages a worker gave up on (after max_deliver deliveries "
    f"or a permanent error), with the original subject, headers, payload and error. Stream "
    f"{S.STREAM_DLQ} (kept 30 days). Producer: the runtime of every worker kind. Operators: "
    "`lakehouse dlq list|show|retry|purge KIND`.",
)


@broker.subscriber(
    S.HEALTH_PING,
    title="health.ping",
    description="Core NATS, no queue group: every live worker process answers with its "
    "HealthReply (`GET /health` gathers the answers for 0.5 s).",
)
async def health_ping(ping: bytes) -> HealthReply:
    _declared_only()


DECLARED["health.ping"] = Declared(binary=EMPTY_PING, replies=(HealthReply,))
