"""NATS users per service (``lakehouse.platform.natsauth``) on a real nats-server running the
generated config: the whole pipeline works under its permissions, and what a user may not do
is refused with a clear error (``PermissionDenied``, a "nats permission denied" log line),
never a bare timeout."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

import workers
from lakehouse.devtools.servers import NatsServer, eventually, wait_until
from lakehouse.devtools.stack import Stack
from lakehouse.platform import natsauth
from lakehouse.platform.bus import STREAMS, connect, provision, settle
from lakehouse.platform.config import Settings, TlsSettings, load_settings, merged
from lakehouse.platform.errors import PermissionDenied
from lakehouse.platform.procs import nats_config_path
from lakehouse.platform.refusals import checked, violation
from lakehouse.platform.rpc import call
from lakehouse.platform.storage import keys, open_storage
from schemas import subjects as S
from schemas.ingest import IngestRequest

KINDS = {kind: workers.resolve(kind) for kind in S.WORKER_KINDS}
DENIED = 0.5  # seconds a refused request waits (nats-py reports a refusal as a timeout)
CSV = b"worker_id,role,city\n1,electrician,Peoria\n2,welder,Joliet\n3,forklift driver,Aurora\n"


@dataclass
class Secured:
    root: Path
    secrets: Path
    server: NatsServer

    def settings(self, user: str, **kw: object) -> Settings:
        base = {"data_dir": self.root / "data", "nats": {"url": self.server.url}, **kw}
        over = merged(base, natsauth.client_settings(user, self.secrets))
        return load_settings(self.root / "none.toml", **over)

    async def connect(self, user: str) -> NATS:
        return await connect(self.settings(user), f"test-{user}", deadline=10)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A nats-server with the repository's config plus the generated users (bcrypt cost 4:
    every connect pays it), the streams provisioned as ``supervisor``."""
    root = tmp_path_factory.mktemp("secured")
    secrets = root / "secrets"
    passwords = natsauth.ensure_passwords(secrets)
    base = [ln for ln in nats_config_path().read_text().splitlines() if not ln.startswith("#")]
    fragment = natsauth.server_config(passwords, workers=KINDS, cost=4)
    server = NatsServer(root / "nats", config="\n".join([*base, fragment])).start()
    env = Secured(root, secrets, server)

    async def provision_streams() -> None:
        nc = await env.connect(natsauth.SUPERVISOR)
        await provision(nc.jetstream(), STREAMS)
        await nc.close()

    try:
        asyncio.run(provision_streams())
        yield env
    finally:
        server.stop()


def refusals(caplog: pytest.LogCaptureFixture) -> set[tuple[str, str]]:
    return {
        (r.operation, r.subject)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "lakehouse.bus" and r.getMessage() == "nats permission denied"
    }


async def refused_subscription(nc: NATS, subject: str) -> None:
    """Subscribe and wait (bounded) for the server's refusal of it."""
    await nc.subscribe(subject)
    await settle(nc)
    await eventually(
        lambda: violation(nc.last_error) == ("subscription", subject.lower()),
        timeout=5,
        what=f"refusal of {subject}",
    )


def test_pipeline_works_under_the_permissions(secured: Secured, tmp_path: Path) -> None:
    """Every worker kind and the gateway, each as its own user: a CSV ingested with
    auto-embed through the gateway is queryable with SQL and searchable by text; an
    upstream system's ingest request runs and it reads its job's status; nothing refused."""
    stack = Stack(tmp_path / "stack")  # its nats is the module's server (not stopped here)
    stack.configure(secured.server.url)
    try:
        for name, argv in (("gateway", ["gateway"]), *((k, ["worker", k]) for k in KINDS)):
            stack.spawn(name, *argv, env=natsauth.client_env(name, secured.secrets))
        stack.wait_healthy(timeout=60)
        params = {
            "name": "crew",
            "embed_index": "crew",
            "id_column": "worker_id",
            "text_template": "{role} in {city}",
        }
        with stack.client() as c:
            r = c.post("/v1/ingest", params=params, content=CSV)
            assert r.status_code == 200, r.text
            r = c.post("/v1/sql", json={"sql": "SELECT role FROM crew ORDER BY worker_id"})
            assert r.status_code == 200, r.text
            assert r.json()["rows"] == [["electrician"], ["welder"], ["forklift driver"]]
            wait_until(
                lambda: c.get("/v1/vectors/indexes/crew").json().get("count") == 3,
                timeout=30,
                interval=0.1,
                what="3 vectors in crew",
            )
            r = c.post("/v1/vectors/indexes/crew/search", json={"text": "welder", "k": 1})
            assert r.status_code == 200, r.text
            assert [h["id"] for h in r.json()["hits"]] == ["2"]

            job = asyncio.run(upstream_ingest(secured, stack.settings))
            assert job["state"] == "succeeded", job
            r = c.post("/v1/sql", json={"sql": "SELECT count(*) AS n FROM upstream_crew"})
            assert r.status_code == 200 and r.json()["rows"] == [[3]], r.text
        assert "nats permission denied" not in stack.logs()
    finally:
        stack.stop()


async def upstream_ingest(secured: Secured, stack_settings: Settings) -> dict[str, object]:
    """As ``upstream``: a CSV put in storage, an ingest request published, the job's status
    read by its subject until it ends."""
    job_id = uuid.uuid4().hex
    storage = open_storage(stack_settings)
    await storage.put_bytes(keys.staged_csv(job_id), CSV)
    await storage.close()
    nc = await secured.connect(natsauth.UPSTREAM)
    try:
        req = IngestRequest(job_id=job_id, name="upstream_crew", source_key=keys.staged_csv(job_id))
        headers = {"Nats-Msg-Id": job_id}
        await nc.jetstream().publish(
            S.INGEST_REQUESTS, req.model_dump_json().encode(), headers=headers
        )
        status = f"$JS.API.DIRECT.GET.{S.STREAM_JOBS}.{S.job(job_id)}"

        async def ended() -> dict[str, object] | None:
            reply = await nc.request(status, b"", timeout=2)
            if (reply.headers or {}).get("Status"):  # 404: no update yet
                return None
            body: dict[str, object] = json.loads(reply.data)
            return body if body["state"] in ("succeeded", "failed") else None

        ended_job: dict[str, object] = await eventually(ended, timeout=30, what="job to end")
        return ended_job
    finally:
        await nc.close()


async def test_ingest_may_publish_its_work_but_not_catalog_events(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await secured.connect("ingest")
    js = nc.jetstream(timeout=DENIED)
    try:
        # What it does: job status, vector deletes of an upsert (any index's partitions).
        await js.publish(S.job("t-ingest"), b"{}")
        await js.publish(S.vectors("no_such_index", 0), b"")
        # What only others do: catalog events (the catalog worker), another kind's dead
        # letters, partition leases (vector workers), another kind's consumer.
        refused = [
            S.catalog_events("crew"),
            S.dlq("query"),
            f"$KV.{S.KV_LEASES}.crew.0",
            f"$JS.API.CONSUMER.MSG.NEXT.{S.STREAM_EMBED}.embed",
        ]
        results = await asyncio.gather(
            *(checked(nc, s, js.publish(s, b"{}")) for s in refused), return_exceptions=True
        )
        for subject, result in zip(refused, results, strict=True):
            assert isinstance(result, PermissionDenied), (subject, result)
            assert result.status == 403 and subject.lower() in str(result.detail)
        await refused_subscription(nc, S.QUERY_SQL)  # serving another kind's subject
        assert {("publish", s.lower()) for s in refused} | {
            ("subscription", S.QUERY_SQL)
        } <= refusals(caplog)
    finally:
        await nc.close()


async def test_upstream_may_not_read_the_catalog_or_ask_the_services(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await secured.connect(natsauth.UPSTREAM)
    js = nc.jetstream(timeout=DENIED)
    cat = S.STREAM_CATALOG
    try:
        attempts = {
            f"$JS.API.CONSUMER.INFO.{cat}.peek": js.consumer_info(cat, "peek"),
            f"$JS.API.CONSUMER.CREATE.{cat}.peek": js.add_consumer(cat, name="peek"),
            f"$JS.API.STREAM.INFO.{cat}": js.stream_info(cat),
            f"$JS.API.STREAM.MSG.GET.{cat}": js.get_last_msg(cat, S.catalog_events("crew")),
            f"$JS.API.STREAM.INFO.{S.STREAM_JOBS}": js.stream_info(S.STREAM_JOBS),
        }
        results = await asyncio.gather(
            *(checked(nc, s, aw) for s, aw in attempts.items()),
            call(nc, S.QUERY_SQL, b"{}", timeout=DENIED, what="query"),
            return_exceptions=True,
        )
        for subject, result in zip([*attempts, S.QUERY_SQL], results, strict=True):
            assert isinstance(result, PermissionDenied), (subject, result)
        assert {("publish", s.lower()) for s in attempts} <= refusals(caplog)
    finally:
        await nc.close()


async def test_nobody_may_listen_on_another_users_inbox(secured: Secured) -> None:
    users = [u for u in natsauth.USERS if u != natsauth.ADMIN]

    async def snoop(user: str) -> None:
        nc = await secured.connect(user)
        try:
            other = natsauth.GATEWAY if user != natsauth.GATEWAY else natsauth.ADMIN
            await refused_subscription(nc, S.all_under(natsauth.inbox_prefix(other)))
            await refused_subscription(nc, "_INBOX.>")  # the default prefix too
        finally:
            await nc.close()

    await asyncio.gather(*(snoop(u) for u in users))


async def test_replies_outside_the_users_inbox_prefix_are_refused_clearly(
    secured: Secured,
) -> None:
    settings = secured.settings("query")
    settings.nats.inbox_prefix = "_INBOX"  # nats-py's default, not the user's own
    nc = await connect(settings, "test-default-inbox", deadline=10)
    try:
        info = nc.jetstream(timeout=DENIED).stream_info(S.STREAM_CATALOG)  # query may ask
        with pytest.raises(PermissionDenied, match=r"'query' may not subscribe to '_inbox\."):
            await checked(nc, f"$JS.API.STREAM.INFO.{S.STREAM_CATALOG}", info)
    finally:
        await nc.close()


async def test_no_one_connects_without_a_users_password(secured: Secured) -> None:
    async def quiet(exc: Exception) -> None:
        pass

    for creds in ({}, {"user": natsauth.ADMIN, "password": "guess"}):
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
            await nats.connect(secured.server.url, allow_reconnect=False, error_cb=quiet, **creds)


def test_passwords_are_made_once_and_kept_private(tmp_path: Path) -> None:
    first = natsauth.ensure_passwords(tmp_path / "secrets")
    assert set(first) == set(natsauth.USERS) and len(set(first.values())) == len(first)
    folder = tmp_path / "secrets" / "nats"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    assert natsauth.ensure_passwords(tmp_path / "secrets") == first
    env = natsauth.client_env("query", tmp_path / "secrets")
    assert env == {
        "LAKEHOUSE_NATS__USER": "query",
        "LAKEHOUSE_NATS__PASSWORD": first["query"],
        "LAKEHOUSE_NATS__INBOX_PREFIX": "_INBOX_query",
    }
    config = natsauth.server_config(
        first,
        workers=KINDS,
        cost=4,
        tls=TlsSettings(
            ca_file=Path("/c/ca.pem"), cert_file=Path("/c/s.pem"), key_file=Path("/c/k")
        ),
    )
    assert all(pw not in config for pw in first.values())  # only bcrypt hashes
    assert 'ca_file: "/c/ca.pem"' in config and "verify: true" in config
    with pytest.raises(ValueError, match="invalid index name"):
        natsauth.permission_table(KINDS, upstream_indexes=["a.b"])
    named = natsauth.permission_table(KINDS, upstream_indexes=["crew"])[natsauth.UPSTREAM]
    assert named is not None and S.embed_requests("crew") in named.publish
    feeds = [s for s in named.publish if s.startswith((S.EMBED_REQUESTS_PREFIX, S.VECTORS_PREFIX))]
    assert feeds == [S.embed_requests("crew"), f"{S.VECTORS_PREFIX}.crew.>"]
