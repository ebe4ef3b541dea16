"""Who may do what on NATS: one user per service, with permissions derived from the code.

Users: ``gateway``; one per worker kind (:data:`schemas.subjects.WORKER_KINDS`); ``upstream``
(an external system that publishes work and reads job status); ``supervisor`` (provisions
the streams at start); ``admin`` (the CLI: everything). Each service user subscribes only
under its own reply prefix ``_INBOX_<user>`` (:func:`inbox_prefix`) and what it serves.

Nothing here lists the subjects a second time: the streams come from
:data:`lakehouse.platform.bus.STREAMS`, a worker kind's durable consumers and services from
its own ``consumes()``/``serves()``, and the rest of what it does on NATS from the
:class:`Uses` its class declares (``uses = Uses(...)``). The layer rule (the platform never
imports ``workers``) makes the worker classes an argument: whoever may import them passes
``{kind: workers.resolve(kind) for kind in WORKER_KINDS}``.

A service answers a request on its requester's inbox: the kinds allowed to publish to a
subject a kind serves (or to the health ping) are its requesters, and it may publish under
their ``_INBOX_<user>`` (``allow_responses`` is not used: the server keeps an entry per
delivered message with a reply subject, JetStream deliveries included, and scans them all on
each delivery past 4096 unexpired ones).

``upstream`` publishes ingest requests, embed requests and vector batches (to the indexes
of ``upstream_indexes`` only, when given: the index is a token of those subjects), and reads
an index's definition and a job's status by subject (a JetStream direct get of the last
message on it): no consumers, no stream info, no subscriptions but its inbox, no services.
What subject permissions cannot say: which job is its own (a job id is just a token; and a
``*`` token in the requested subject reads the newest update of whichever job, so statuses
are not secret from it: job ids, random when the gateway makes them, are not a capability),
nor which dataset an ingest request names or which storage key it reads (payload, not
subject): an ingest request may replace any dataset.

Passwords are random per user, kept as ``<secrets_dir>/nats/<user>.password`` (mode 0600 in
a 0700 directory); the server config holds only their bcrypt hashes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import bcrypt
from pydantic import SecretStr

from lakehouse.platform.auth import write_secret_file
from lakehouse.platform.bus import STREAMS
from lakehouse.platform.config import Settings, TlsSettings
from schemas import subjects as S

if TYPE_CHECKING:
    from lakehouse.platform.runtime import Runtime, Worker

GATEWAY = "gateway"
UPSTREAM = "upstream"
SUPERVISOR = "supervisor"
ADMIN = "admin"
USERS: tuple[str, ...] = (GATEWAY, *S.WORKER_KINDS, UPSTREAM, SUPERVISOR, ADMIN)
"""Every NATS user of a secured stack."""

ACCOUNT = "LAKEHOUSE"
"""The one account every user is in (JetStream enabled)."""

BCRYPT_COST = 11
"""Cost of the password hashes: the server pays it on every connect (~0.2 s at 11)."""

API = "$JS.API"


@dataclass(frozen=True)
class Uses:
    """What a worker kind does on NATS beyond its durable consumers (``consumes()``) and its
    services (``serves()``); a worker class declares it as ``uses = Uses(...)``."""

    publishes: tuple[str, ...] = ()
    """Subjects it publishes to: core, JetStream, or requests it makes (the replies come
    back on its inbox)."""
    reads: tuple[str, ...] = ()
    """Streams it reads message by message (stream info, get, direct get)."""
    follows: tuple[str, ...] = ()
    """Streams it reads through consumers of its own making (ordered or ephemeral)."""
    subscribes: tuple[str, ...] = ()
    """Core subjects it listens on beyond its services."""
    buckets: tuple[str, ...] = ()
    """Key-value buckets it uses (creates when missing, reads, writes, watches)."""


@dataclass(frozen=True)
class Permissions:
    """A user's allowed subjects; ``None`` in place of a Permissions means everything."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


@dataclass
class _Grant:
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)

    def done(self) -> Permissions:
        return Permissions(tuple(dict.fromkeys(self.publish)), tuple(dict.fromkeys(self.subscribe)))


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix of ``user``'s connections (``nats.inbox_prefix``)."""
    return f"_INBOX_{user}"


def _api(*tokens: str) -> str:
    return ".".join((API, *tokens))


def _stream_infos() -> list[str]:
    return [_api("STREAM.INFO", s.name) for s in STREAMS]


def _reads(stream: str) -> list[str]:
    return [
        _api("STREAM.INFO", stream),
        _api("STREAM.MSG.GET", stream),
        _api("DIRECT.GET", stream),
        _api("DIRECT.GET", stream, ">"),
    ]


def _follows(stream: str) -> list[str]:
    # Ordered consumers are created without a name (CONSUMER.CREATE.<stream>) after a
    # STREAM.NAMES lookup; named ephemerals put their name and filter after the stream.
    return [
        _api("STREAM.NAMES"),
        _api("CONSUMER.CREATE", stream),
        _api("CONSUMER.CREATE", stream, ">"),
        _api("CONSUMER.INFO", stream, "*"),
        _api("CONSUMER.MSG.NEXT", stream, "*"),
        _api("CONSUMER.DELETE", stream, "*"),
        f"$JS.FC.{stream}.>",  # flow-control replies of push consumers
    ]


def _consumes(stream: str, durable: str) -> list[str]:
    return [
        _api("CONSUMER.INFO", stream, durable),
        _api("CONSUMER.DURABLE.CREATE", stream, durable),  # provision() creates/updates it
        _api("CONSUMER.CREATE", stream, durable),
        _api("CONSUMER.CREATE", stream, durable, ">"),
        _api("CONSUMER.MSG.NEXT", stream, durable),
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _bucket(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [_api("STREAM.CREATE", stream), *_reads(stream), *_follows(stream), f"$KV.{bucket}.>"]


def _declared(cls: type[Worker]) -> tuple[list[tuple[str, str]], list[str]]:
    """The (stream, durable) of each consumer and the subjects a worker kind serves, from
    ``consumes()``/``serves()`` of an instance that is never started (they only build
    declarations; the runtime calls them before ``setup()`` too)."""
    probe = cast("Runtime", SimpleNamespace(settings=Settings.model_construct(), kind=cls.kind))
    worker = cls(probe)
    consumers = [(c.consumer.stream, c.consumer.durable) for c in worker.consumes()]
    return consumers, [s.subject for s in worker.serves()]


def overlaps(a: str, b: str) -> bool:
    """Whether some subject matches both ``a`` and ``b`` (wildcards allowed in each)."""
    ta, tb = a.split("."), b.split(".")
    for x, y in zip(ta, tb, strict=False):
        if ">" in (x, y):
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(ta) == len(tb)


def permission_table(
    workers: Mapping[str, type[Worker]], *, upstream_indexes: Sequence[str] | None = None
) -> dict[str, Permissions | None]:
    """Every user's permissions (``None``: everything). ``workers``: the worker class of
    each kind. ``upstream_indexes``: the indexes ``upstream`` may feed (None: any)."""
    grants: dict[str, _Grant] = {}
    served: dict[str, list[str]] = {}
    for kind, cls in workers.items():
        consumers, services = _declared(cls)
        uses = getattr(cls, "uses", Uses())
        served[kind] = [*services, S.HEALTH_PING]
        g = grants[kind] = _Grant()
        g.publish += _stream_infos()  # provision() checks every stream at start
        for stream, durable in consumers:
            g.publish += _consumes(stream, durable)
        g.publish += [S.dlq(kind), *uses.publishes]
        for stream in uses.reads:
            g.publish += _reads(stream)
        for stream in uses.follows:
            g.publish += _follows(stream)
        for bucket in uses.buckets:
            g.publish += _bucket(bucket)
        g.subscribe += [S.HEALTH_PING, *services, *uses.subscribes]

    gw = grants[GATEWAY] = _Grant()
    gw.publish += [s for subjects in served.values() for s in subjects]  # asks every service
    gw.publish += [
        S.INGEST_REQUESTS,
        S.job("*"),
        S.index_def("*"),
        S.embed_requests("*"),
        S.all_under(S.VECTORS_PREFIX),
        _api("STREAM.PURGE", S.STREAM_VECTORS),  # deleting an index drops its vectors
        *_stream_infos(),
        *(_api("CONSUMER.LIST", s.name) for s in STREAMS),  # the status page
        *_reads(S.STREAM_JOBS),
        *_reads(S.STREAM_INDEXES),
        *_follows(S.STREAM_CATALOG),  # catalog events drop cached filters
    ]
    gw.subscribe += [S.all_under(S.INDEXES_PREFIX), S.job("*")]

    up = grants[UPSTREAM] = _Grant()
    names = ["*"] if upstream_indexes is None else list(upstream_indexes)
    for name in names:
        if name != "*" and not S.NAME_RE.match(name):
            raise ValueError(f"invalid index name {name!r}")
    up.publish += [S.INGEST_REQUESTS]
    for name in names:
        up.publish += [
            S.embed_requests(name),
            S.all_under(f"{S.VECTORS_PREFIX}.{name}"),
            # The index's definition (dim, partitions), read by subject only.
            _api("DIRECT.GET", S.STREAM_INDEXES, S.index_def(name)),
        ]
    # A job's status by its id (the last update, and the embed batches' progress), read by
    # subject only: no stream info, no consumers, no subscriptions, so no listing of jobs.
    up.publish += [
        _api("DIRECT.GET", S.STREAM_JOBS, S.job("*")),
        _api("DIRECT.GET", S.STREAM_JOBS, S.job("*"), "embed", "*"),
    ]

    sup = grants[SUPERVISOR] = _Grant()
    ops = ("STREAM.INFO", "STREAM.CREATE", "STREAM.UPDATE")  # provision(STREAMS)
    sup.publish += [_api(op, spec.name) for spec in STREAMS for op in ops]

    # A service answers on its requesters' inboxes: whoever may publish what it serves.
    publishes = {user: list(g.publish) for user, g in grants.items()}
    for kind, subjects in served.items():
        askers = [
            user
            for user, allowed in publishes.items()
            if user != kind and any(overlaps(a, s) for a in allowed for s in subjects)
        ]
        grants[kind].publish += [S.all_under(inbox_prefix(u)) for u in [*askers, ADMIN]]
    for user, g in grants.items():
        g.subscribe.insert(0, S.all_under(inbox_prefix(user)))
    table: dict[str, Permissions | None] = {u: g.done() for u, g in grants.items()}
    table[ADMIN] = None
    order = [u for u in USERS if u in table] + [u for u in table if u not in USERS]
    return {u: table[u] for u in order}


# ---- passwords ------------------------------------------------------------------------------
def _password_file(secrets_dir: Path, user: str) -> Path:
    return secrets_dir / "nats" / f"{user}.password"


def ensure_passwords(secrets_dir: Path, users: Iterable[str] = USERS) -> dict[str, str]:
    """Each user's password, made once (``secrets.token_urlsafe(32)``) and reused after."""
    out = {}
    for user in users:
        path = _password_file(secrets_dir, user)
        kept = path.read_text().strip() if path.exists() else ""
        if not kept:
            kept = secrets.token_urlsafe(32)
            write_secret_file(path, kept + "\n")
        out[user] = kept
    return out


def client_settings(user: str, secrets_dir: Path) -> dict[str, Any]:
    """Settings overrides that make a process connect as ``user`` (its kept password, a
    ``SecretStr``, and its own inbox prefix): ``{"nats": {"user", "password",
    "inbox_prefix"}}`` for ``load_settings(**...)``, :func:`merged` or a ``model_copy``."""
    path = _password_file(secrets_dir, user)
    try:
        password = SecretStr(path.read_text().strip())
    except FileNotFoundError:
        raise FileNotFoundError(f"no NATS password for {user!r} at {path}") from None
    return {"nats": {"user": user, "password": password, "inbox_prefix": inbox_prefix(user)}}


def client_env(user: str, secrets_dir: Path) -> dict[str, str]:
    """:func:`client_settings` as ``LAKEHOUSE_NATS__*`` variables, for a child process."""
    nats = client_settings(user, secrets_dir)["nats"]
    return {
        f"LAKEHOUSE_NATS__{k.upper()}": v.get_secret_value() if isinstance(v, SecretStr) else v
        for k, v in nats.items()
    }


# ---- the server's config ----------------------------------------------------------------------
def _q(value: str | Path) -> str:
    return json.dumps(str(value))  # a double-quoted string: no $variables, no number parsing


def _list(subjects: Iterable[str]) -> str:
    return "[" + ", ".join(_q(s) for s in subjects) + "]"


def server_config(
    passwords: Mapping[str, str],
    *,
    workers: Mapping[str, type[Worker]],
    tls: TlsSettings | None = None,
    upstream_indexes: Sequence[str] | None = None,
    cost: int = BCRYPT_COST,
) -> str:
    """The nats-server config fragment of a secured stack: the ``accounts`` block (one
    JetStream account with every user of ``passwords``, bcrypt-hashed, and its
    permissions) and, with ``tls`` (``cert_file``/``key_file``, and ``ca_file`` to require
    client certificates of that CA), the ``tls`` block. See :func:`permission_table` for
    ``workers`` and ``upstream_indexes``; ``cost``: bcrypt cost (tests use 4)."""
    table = permission_table(workers, upstream_indexes=upstream_indexes)
    lines = ["accounts {", f"  {ACCOUNT} {{", "    jetstream: enabled", "    users: ["]
    for user, password in passwords.items():
        if user not in table:
            raise KeyError(f"unknown NATS user {user!r} (known: {', '.join(table)})")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
        perms = table[user]
        entry = f"      {{user: {_q(user)}, password: {_q(hashed)}"
        if perms is not None:
            entry += (
                f", permissions: {{publish: {{allow: {_list(perms.publish)}}}, "
                f"subscribe: {{allow: {_list(perms.subscribe)}}}}}"
            )
        lines.append(entry + "}")
    lines += ["    ]", "  }", "}"]
    if tls is not None and tls.cert_file and tls.key_file:
        lines += ["tls {", f"  cert_file: {_q(tls.cert_file)}", f"  key_file: {_q(tls.key_file)}"]
        if tls.ca_file:
            lines += [f"  ca_file: {_q(tls.ca_file)}", "  verify: true"]
        lines += ["  timeout: 5", "}"]
    return "\n".join(lines) + "\n"
