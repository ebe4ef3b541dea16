"""One Settings object: defaults -> lakehouse.toml -> LAKEHOUSE_* env -> CLI flags.

Nested fields use ``__`` in environment variables, e.g. ``LAKEHOUSE_NATS__URL`` or
``LAKEHOUSE_STORAGE__S3_SECRET_KEY``. The config file is ``./lakehouse.toml`` unless
``LAKEHOUSE_CONFIG`` or ``--config`` names another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

GiB = 1 << 30
MiB = 1 << 20


class NatsSettings(BaseModel):
    url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds_file: Path | None = Field(None, description="NATS .creds file (JWT + nkey seed).")
    connect_timeout: float = 5.0
    request_timeout: float = 10.0
    replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="Copies of every stream (its consumers follow) and of the lease bucket: 1 "
        "on one server, 3 on a JetStream cluster (survives the loss of one node).",
    )
    ping_interval: float = Field(
        1.0,
        description="Seconds between client pings: a client on a cut-off node notices after "
        "ping_interval x max_outstanding_pings and moves to another server (nats-py's own "
        "default, 2 minutes, would leave it stuck).",
    )
    max_outstanding_pings: int = 2
    inbox_prefix: str = Field(
        "_INBOX",
        description="Prefix of this process's reply subjects; each service of a secured stack "
        "has its own (_INBOX_<user>), which its NATS permissions allow and no one else's do.",
    )


class StorageSettings(BaseModel):
    url: str | None = Field(
        None, description="file://DIR or s3://BUCKET; default file://<data_dir>/objects."
    )
    shared: bool = Field(
        False,
        description="file:// storage is one directory every host sees (NFS), or every process "
        "runs on one machine. Required for file:// when nats.url names several servers.",
    )
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (MinIO, SeaweedFS, ...).")
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_part_size: int = Field(8 * MiB, description="Multipart part size in bytes (>= 5 MiB).")
    s3_ca_file: Path | None = Field(
        None,
        description="CA bundle (PEM) for an https S3 endpoint signed by a private CA; "
        "default: the system's trust (AWS and public endpoints).",
    )
    s3_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds an S3 request waits for the store's answer (each read; "
        "connecting and each send wait at most 5, or this if less); a request is tried 3 "
        "times. A store that stops answering (SeaweedFS with too few volume servers) fails "
        "the request with a retryable error (503; a job is retried with backoff), not a hang.",
    )


class TlsSettings(BaseModel):
    """Certificates of this process. ``ca_file`` is what it trusts (NATS servers, S3, the
    gateway); ``cert_file``/``key_file`` are its own: the gateway serves HTTPS with them,
    a NATS client presents them (mutual TLS), nats-server uses them for clients and routes."""

    ca_file: Path | None = Field(None, description="CA bundle (PEM) this process trusts.")
    cert_file: Path | None = Field(None, description="This process's certificate (PEM).")
    key_file: Path | None = Field(None, description="Its private key (PEM).")


class AuthSettings(BaseModel):
    keys_file: Path | None = Field(
        None,
        description="Gateway API keys (hashes only); default <data_dir>/secrets/keys.json. "
        "No keys and a loopback bind: no authentication.",
    )
    insecure_no_auth: bool = Field(
        False, description="Serve a non-loopback address without API keys (said in /health)."
    )
    session_ttl: float = Field(8 * 3600.0, description="Seconds a web login lasts.")
    upstream_indexes: list[str] | None = Field(
        None,
        description="On a secured stack, the vector indexes the NATS user `upstream` may "
        "publish embed requests and vector batches to (None: any).",
    )


class LimitsSettings(BaseModel):
    """What one request may ask for; a limit hit is a 4xx naming the limit, never a 5xx."""

    max_json_bytes: int = Field(16 * MiB, description="Largest JSON request body (413).")
    max_k: int = Field(1000, description="Largest k (top-K) of a search.")
    max_items_per_add: int = Field(10_000, description="Items in one POST .../items.")
    max_filter_ids: int = Field(
        2_000_000, description="Ids a search filter may resolve to (400 above)."
    )
    max_sql_result_bytes: int = Field(
        256 * MiB, description="Bytes of one SQL result before it is refused (413)."
    )
    max_csv_columns: int = Field(2000, description="Columns of an ingested CSV (400 above).")
    max_cell_bytes: int = Field(
        8 * MiB, description="Bytes of one CSV field (400 above); resumes fit easily."
    )
    requests_per_second: float = Field(
        0.0, description="Sustained requests per second per API key; 0 = unlimited (429)."
    )
    burst: int = Field(50, description="Requests a key may make at once above the rate.")
    max_concurrent_queries: int = Field(
        16, description="SQL and search requests in flight per key per gateway (429 above)."
    )


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 3110
    max_put_bytes: int = Field(GiB, description="Largest PUT /v1/storage body, in bytes.")
    max_concurrent_puts: int = Field(4, description="Concurrent storage PUTs before 503.")
    health_timeout: float = Field(0.5, description="Seconds to gather worker health replies.")
    shutdown_timeout: int = Field(
        30, ge=1, description="Seconds in-flight requests get after SIGTERM before they are cut."
    )
    filter_cache_bytes: int = Field(
        64 << 20,
        ge=0,
        description="Resolved search filters (id sets) kept, in bytes; dropped when a catalog "
        "event changes a dataset they read.",
    )


class WorkerSettings(BaseModel):
    concurrency: dict[str, int] = Field(
        default_factory=dict, description="Messages handled at once per process, by worker kind."
    )
    default_concurrency: int = 2
    max_deliver: int = Field(5, description="Deliveries before a message is dead-lettered.")
    ack_wait: float = Field(30.0, description="Seconds before an unacked message is redelivered.")
    backoff_base: float = Field(1.0, description="First nak delay in seconds; doubles per try.")
    backoff_max: float = 30.0
    dlq_inline_max: int = Field(256 * 1024, description="Larger DLQ payloads go to storage.")
    metrics_port: int = Field(
        0,
        ge=-1,
        description="Port of each worker process's Prometheus /metrics: 0 = a free port (its "
        "health reply and `lakehouse status` say which), -1 = none.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the worker metrics port binds.")

    def concurrency_for(self, kind: str) -> int:
        return max(1, self.concurrency.get(kind, self.default_concurrency))


class IngestSettings(BaseModel):
    max_upload_bytes: int = Field(4 * GiB, description="Largest POST /v1/ingest body (413).")
    wait: float = Field(120.0, description="Seconds /v1/ingest waits before answering 202.")
    sample_rows: int = Field(1000, description="Rows sampled for schema inference.")
    part_bytes: int = Field(
        8 << 20,
        ge=0,
        description="A larger upload is staged in parts of this size and converted while it "
        "arrives; 0: the whole upload is staged before its job starts.",
    )
    upload_idle_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a job waits for the next part of an upload still arriving "
        "before it fails (the gateway receiving it stopped).",
    )


class CatalogSettings(BaseModel):
    gc_interval: float = Field(3600.0, description="Seconds between orphan sweeps; 0 = off.")
    gc_grace: float = Field(3600.0, description="Unreferenced objects younger than this stay.")
    keep_revisions: int = Field(
        5, ge=1, description="Revisions per dataset whose objects gc keeps (time travel)."
    )
    compact_deleted_ratio: float = Field(
        0.01,
        description="Compact a dataset once its delete sets hold this share of its rows (a "
        "query over delete sets pays a join on the key: 0.8 -> 9.8 ms for count(*) at 100K).",
    )
    compact_max_objects: int = Field(
        32, description="Compact a dataset once it has more data objects than this."
    )


class QuerySettings(BaseModel):
    max_rows: int = Field(100_000, description="Rows returned before truncated: true.")
    max_rows_arrow: int = Field(
        2_000_000, description="Row cap for Arrow IPC results (also filter id sets)."
    )
    timeout: float = Field(30.0, description="Statement timeout in seconds (504 after).")
    read_your_writes_wait: float = Field(
        2.0, description="Longest wait for a catalog event a request depends on."
    )
    threads: int | None = Field(None, description="DuckDB threads (default: all cores).")
    row_cache_bytes: int = Field(
        512 << 20,
        ge=0,
        description="In-memory copies of datasets for rows by id (search hits), in all; a "
        "larger dataset is read from its objects on each lookup.",
    )


class EmbedSettings(BaseModel):
    provider: str = Field("local", description="local (packaged MiniLM) or ollama.")
    ollama_host: str = Field("http://127.0.0.1:11434", description="Ollama server URL.")
    ollama_model: str = Field("nomic-embed-text", description="Ollama embedding model.")
    ollama_dim: int = Field(768, description="Dimension of the Ollama model's vectors.")
    batch_size: int = Field(64, description="Texts per model call.")
    cache_size: int = Field(10_000, description="Query embeddings kept in the LRU cache.")
    timeout: float = Field(60.0, description="Seconds before a provider call fails.")
    max_tokens: int = Field(
        256,
        ge=16,
        le=512,
        description="local provider: texts are truncated to this many tokens (special tokens "
        "included). MiniLM was trained on 128-token inputs; 512 is its position limit.",
    )
    threads: int = Field(
        0,
        ge=0,
        description="local provider: onnxruntime intra-op threads (0: all cores; under "
        "`lakehouse up --replicas embed=N`, each of the N gets cores / N).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="local provider: auto (CUDA when onnxruntime offers it, else CPU), cpu, or "
        "cuda (an error at load when onnxruntime has no CUDA: pip install '.[gpu]').",
    )


class VectorSettings(BaseModel):
    snapshot_every: float = Field(60.0, description="Seconds between partition snapshots.")
    snapshot_min_changes: int = Field(1000, description="Changes before a periodic snapshot.")
    lease_ttl: float = Field(5.0, description="Seconds a partition lease lives unrenewed.")
    add_chunk: int = Field(256, description="Vectors per locked add (searches interleave).")
    search_timeout: float = Field(2.0, description="Scatter/gather deadline in seconds.")
    search_batch: int = Field(
        64,
        ge=1,
        le=1024,
        description="Unfiltered searches of one index a vector worker answers together at most "
        "(those that arrived while the previous batch ran: one knn_query per partition for "
        "all of them); 1: each search alone.",
    )
    threads: int = Field(
        0,
        description="hnswlib threads for loads (0: all cores); within 1 s of a search a "
        "worker applies batches on one thread, so searches keep a core.",
    )
    int8_mirror: bool | Literal["auto"] = Field(
        "auto",
        description="Keep an int8 copy of every vector (dim + 12 B each) to score filtered "
        "subsets fast and exactly; off: the subset's float vectors are read from the graph "
        "(slower, less memory). auto: on for indexes with a dataset (the ones that can be "
        "filtered).",
    )

    def mirror_for(self, spec_dataset: str | None) -> bool:
        """Whether an index over ``spec_dataset`` (None: no dataset) keeps the int8 copy."""
        if self.int8_mirror == "auto":
            return spec_dataset is not None
        return self.int8_mirror

    fetch_batch: int = Field(4, description="Batches a partition fetches at a time (memory bound).")
    fetch_wait: float = Field(5.0, description="Seconds a partition's idle fetch waits.")


class SupervisorSettings(BaseModel):
    nats_port: int = 4222
    secure: bool = Field(
        False,
        description="API keys, NATS users per service and TLS everywhere; certificates, keys "
        "and passwords are made under <data_dir>/secrets on first start.",
    )
    replicas: dict[str, int] = Field(default_factory=dict, description="Processes per worker kind.")
    restart_backoff_max: float = 30.0
    stop_timeout: float = Field(30.0, description="Seconds a child gets to drain before SIGKILL.")
    nats_sync: str = Field(
        "always",
        pattern=r"^(default|always|\d+(ms|s|m|h))$",
        description="JetStream sync_interval of the nats-server `up` starts: always (fsync "
        "before each acknowledgement: nothing acknowledged is lost on power failure), "
        "default (nats-server's, every 2 minutes) or a period such as 10s. See README "
        "Durability for what each costs.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LAKEHOUSE_",
        env_nested_delimiter="__",
        toml_file="lakehouse.toml",
        extra="ignore",
    )

    data_dir: Path = Field(Path("./data"), description="NATS store and file storage live here.")
    log_level: str = "INFO"
    nats: NatsSettings = NatsSettings()
    storage: StorageSettings = StorageSettings()
    gateway: GatewaySettings = GatewaySettings()
    workers: WorkerSettings = WorkerSettings()
    ingest: IngestSettings = IngestSettings()
    catalog: CatalogSettings = CatalogSettings()
    query: QuerySettings = QuerySettings()
    embed: EmbedSettings = EmbedSettings()
    vectors: VectorSettings = VectorSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    tls: TlsSettings = TlsSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    faults: dict[str, str] = Field(
        default_factory=dict,
        description="Crash-test fault points, point -> action (see lakehouse/faults.py). "
        "Empty in production.",
    )

    @model_validator(mode="after")
    def _storage_reaches_every_host(self) -> Settings:
        servers = [u for u in self.nats.url.split(",") if u.strip()]
        if len(servers) > 1 and self.storage_url.startswith("file://") and not self.storage.shared:
            raise ValueError(
                f"storage {self.storage_url} is a directory on one machine, but nats.url names "
                f"{len(servers)} servers (workers on several hosts would each see their own "
                "files): use s3:// storage, or set storage.shared = true "
                "(LAKEHOUSE_STORAGE__SHARED=true) when every host sees that directory (NFS) "
                "or every process runs on this machine"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first: CLI flags (init), environment, the TOML file, defaults.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def secrets_dir(self) -> Path:
        """Where ``up --secure`` keeps the CA, certificates, API keys and NATS passwords."""
        return self.data_dir / "secrets"

    @property
    def keys_file(self) -> Path:
        return self.auth.keys_file or self.secrets_dir / "keys.json"

    @property
    def storage_url(self) -> str:
        return self.storage.url or f"file://{(self.data_dir / 'objects').resolve().as_posix()}"

    def secret_values(self) -> list[str]:
        """Every configured secret, for log redaction."""
        found = [
            s.get_secret_value()
            for s in (
                self.nats.password,
                self.nats.token,
                self.storage.s3_access_key,
                self.storage.s3_secret_key,
            )
            if s is not None and s.get_secret_value()
        ]
        pw = urlsplit(self.nats.url.split(",")[0]).password
        if pw:
            found.append(pw)
        return found


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``, one level deep (a section override keeps the other keys)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build Settings, with ``overrides`` (CLI flags, nested dicts allowed) winning."""
    path = Path(config_file or os.environ.get("LAKEHOUSE_CONFIG", "lakehouse.toml"))

    class _Settings(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    clean = {k: v for k, v in overrides.items() if v is not None}
    return _Settings(**clean)


def redact_url(url: str) -> str:
    """``nats://user:pw@host`` -> ``nats://user:***@host`` (each of a comma-separated list)."""
    out = []
    for part in url.split(","):
        p = urlsplit(part.strip())
        if p.password is not None or (p.username and "@" in p.netloc):
            host = p.netloc.rsplit("@", 1)[1]
            user = p.username or ""
            netloc = f"{user}:***@{host}" if p.password is not None else f"***@{host}"
            part = urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))
        out.append(part)
    return ",".join(out)


def child_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a child process see the same settings as ``settings``."""
    env: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(f"{prefix}__{name.upper()}", getattr(value, name))
        elif isinstance(value, SecretStr):
            env[prefix] = value.get_secret_value()
        elif isinstance(value, dict):
            import json

            env[prefix] = json.dumps(value)
        elif value is not None:
            env[prefix] = str(value)

    for name in Settings.model_fields:
        walk(f"LAKEHOUSE_{name.upper()}", getattr(settings, name))
    return env
