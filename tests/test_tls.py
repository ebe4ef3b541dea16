"""TLS: the dev CA (``lakehouse certs``), NATS with mutual TLS for clients and cluster routes,
the gateway over HTTPS and S3 over HTTPS, all on real processes."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from nats.js import api

from lakehouse.client.http import CA_ENV, Client, GatewayError
from lakehouse.devtools.servers import NatsCluster, NatsServer, SeaweedS3, eventually
from lakehouse.devtools.stack import project_env, run_cli
from lakehouse.ops import certs
from lakehouse.platform import bus
from lakehouse.platform.config import Settings, TlsSettings
from lakehouse.platform.errors import Unavailable
from lakehouse.platform.storage import open_storage
from lakehouse.platform.tlsctx import client_context


def tls_block(cert: Path, key: Path, ca: Path) -> str:
    """nats-server's ``tls { }``: present ``cert``, require a peer certificate of ``ca``."""
    return (
        f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n  ca_file: "{ca}"\n'
        "  verify: true\n  timeout: 3\n}\n"
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.CertPaths:
    return certs.ensure(tmp_path_factory.mktemp("pki") / "secrets")


@pytest.fixture(scope="module")
def tls_nats(
    tmp_path_factory: pytest.TempPathFactory, pki: certs.CertPaths
) -> Iterator[NatsServer]:
    """nats-server that speaks only TLS and wants a client certificate of our CA."""
    config = tls_block(pki.server, pki.server_key, pki.ca) + "jetstream {}\n"
    server = NatsServer(tmp_path_factory.mktemp("tlsnats"), config=config).start()
    yield server
    server.stop()


def client_tls(pki: certs.CertPaths) -> dict[str, Path]:
    return {"ca_file": pki.ca, "cert_file": pki.client, "key_file": pki.client_key}


# ---- certificates --------------------------------------------------------------------------


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_ensure_makes_a_ca_and_leaves_once(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    first = certs.ensure(d, ["10.1.2.3", "nats.internal"])
    assert set(first.created) == set(first.all())
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for key in (first.ca_key, first.server_key, first.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    before = {p: p.read_bytes() for p in first.all()}

    again = certs.ensure(d, ["10.1.2.3", "nats.internal"])
    assert again.created == ()
    assert {p: p.read_bytes() for p in again.all()} == before

    ca = x509.load_pem_x509_certificate(first.ca.read_bytes())
    server = x509.load_pem_x509_certificate(first.server.read_bytes())
    client = x509.load_pem_x509_certificate(first.client.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for leaf in (server, client):
        leaf.verify_directly_issued_by(ca)
        days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
        assert days == certs.LEAF_DAYS
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == certs.CA_DAYS
    assert set(certs.hosts_of(first.server)) == {
        "127.0.0.1",
        "localhost",
        "10.1.2.3",
        "nats.internal",
    }
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.1.2.3"]
    assert _eku(server) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert _eku(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}

    cert, key = certs.issue(d, "node-2", ["n2.internal"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    node = x509.load_pem_x509_certificate(cert.read_bytes())
    node.verify_directly_issued_by(ca)
    assert "n2.internal" in certs.hosts_of(cert)
    assert _eku(node) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert certs.ensure(d).created == ()  # an extra leaf changes nothing of the set


def test_certs_command_says_what_it_made_and_what_was_there(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = certs.ensure(data / "secrets")
    made.client.unlink()
    argv = ("certs", "--data-dir", str(data), "--host", "db.example", "--json")
    out = run_cli(*argv, env=project_env())
    report = json.loads(out.stdout)
    assert report["created"] == [str(made.client), str(made.client_key)]
    assert str(made.ca) in report["existing"]
    assert report["server_lacks"] == ["db.example"]  # an existing server.pem is kept
    assert "db.example" in out.stderr and "server.pem" in out.stderr

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    bad = run_cli("certs", "--out", str(blocked / "sub"), env=project_env(), rc=2)
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), bad.stderr


# ---- NATS ------------------------------------------------------------------------------------


async def test_nats_with_mutual_tls_round_trips_and_runs_jetstream(
    tls_nats: NatsServer, pki: certs.CertPaths, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(tls_nats, tls=client_tls(pki), nats={"inbox_prefix": "_INBOX_tls"})
    settings.nats.url = settings.nats.url.replace("nats://", "tls://")  # either scheme works
    nc = await bus.connect(settings, "tls-test", deadline=5)
    try:
        assert nc.connected_url is not None and nc.connected_url.scheme == "tls"
        sub = await nc.subscribe("tls.echo", cb=None)

        async def echo() -> None:
            msg = await sub.next_msg(timeout=5)
            await msg.respond(msg.data.upper())

        task = asyncio.create_task(echo())
        await bus.settle(nc)
        reply = await nc.request("tls.echo", b"hello", timeout=5)
        await task
        assert reply.data == b"HELLO"
        assert reply.subject.startswith("_INBOX_tls.")  # the reply came back to our inbox

        js = nc.jetstream(timeout=5)
        await js.add_stream(name="TLS", subjects=["tls.js.>"])
        ack = await js.publish("tls.js.one", b"stored")
        assert (await js.get_msg("TLS", ack.seq)).data == b"stored"
    finally:
        await nc.close()


async def test_nats_refuses_a_client_that_does_not_trust_our_ca(
    tls_nats: NatsServer, pki: certs.CertPaths, make_settings: Callable[..., Settings]
) -> None:
    other = certs.ensure(pki.dir.parent / "other-ca")  # a client cert, but another CA
    settings = make_settings(
        tls_nats, tls={"ca_file": other.ca, "cert_file": other.client, "key_file": other.client_key}
    )
    started = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        await bus.connect(settings, "wrong-ca", deadline=1.0)
    assert time.monotonic() - started < 3
    assert "SSLCertVerificationError" in str(err.value), err.value
    assert "certificate" in str(err.value)


async def test_nats_refuses_a_client_without_a_certificate(
    tls_nats: NatsServer, pki: certs.CertPaths, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(tls_nats, tls={"ca_file": pki.ca})
    started = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        await bus.connect(settings, "no-cert", deadline=1.0)
    assert time.monotonic() - started < 3
    message = str(err.value)
    assert message.startswith(f"cannot connect to NATS at {tls_nats.url}: "), message
    # The server's alert, or the pipe it closed right after (whichever came last).
    assert "CERTIFICATE_REQUIRED" in message or "BrokenPipeError" in message, message


async def test_cluster_routes_with_mutual_tls_carry_an_r3_stream(
    tmp_path: Path, pki: certs.CertPaths
) -> None:
    def route_tls(i: int) -> str:
        cert, key = certs.issue(pki.dir, f"node{i}")
        return "  " + tls_block(cert, key, pki.ca)

    # start() returns once an R3 stream can be placed: the routes' TLS handshakes worked.
    cluster = NatsCluster(tmp_path / "nats", name="tlsc", route_config=route_tls)
    await asyncio.to_thread(cluster.start)
    try:
        for port in cluster.monitor_ports:  # every node's routes require a verified peer
            varz = httpx.get(f"http://127.0.0.1:{port}/varz", timeout=5).json()["cluster"]
            assert varz["tls_required"] and varz["tls_verify"], varz
        first = await nats.connect(cluster.nodes[0].url)
        third = await nats.connect(cluster.nodes[2].url)
        try:
            js = first.jetstream(timeout=2)
            await js.add_stream(api.StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3))
            ack = await js.publish("r3.x", b"across routes")
            got = await third.jetstream(timeout=5).get_msg("R3", ack.seq)
            assert got.data == b"across routes"
            info = await js.stream_info("R3")
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        finally:
            await first.close()
            await third.close()
    finally:
        cluster.stop()


# ---- HTTPS -----------------------------------------------------------------------------------


async def test_gateway_serves_https_and_reaches_nats_with_its_certificate(
    tls_nats: NatsServer,
    pki: certs.CertPaths,
    make_settings: Callable[..., Settings],
    gateway: Callable[[Settings], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its own certificate serves HTTPS and is its client certificate for NATS (clientAuth).
    settings = make_settings(
        tls_nats,
        tls={"ca_file": pki.ca, "cert_file": pki.server, "key_file": pki.server_key},
    )
    base = gateway(settings)
    assert base.startswith("https://")
    trusted = client_context(TlsSettings(ca_file=pki.ca))
    async with httpx.AsyncClient(verify=trusted or True, timeout=5) as http:

        async def healthy() -> bool:
            r = await http.get(f"{base}/health")
            return r.status_code == 200 and r.json()["nats"]["connected"]

        await eventually(healthy, timeout=10, what="the gateway to reach NATS over TLS")

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{base}/health", timeout=5)

    # The verbs' client: LAKEHOUSE_CA names the CA; without it, a one-line hint.
    monkeypatch.setenv(CA_ENV, str(pki.ca))
    async with Client(base, timeout=5) as gw:
        assert (await gw.health())["nats"]["connected"]
    monkeypatch.delenv(CA_ENV)
    async with Client(base, timeout=5) as gw:
        with pytest.raises(GatewayError, match=f"TLS: .*set {CA_ENV}"):
            await gw.health()


async def test_s3_over_https_with_our_ca(
    tmp_path: Path, pki: certs.CertPaths, make_settings: Callable[..., Settings]
) -> None:
    server = SeaweedS3(
        tmp_path / "weed", cert_file=pki.server, key_file=pki.server_key, ca_file=pki.ca
    ).start()
    try:
        assert server.endpoint.startswith("https://")
        section = {**server.storage("tlsbucket"), "s3_ca_file": pki.ca}
        settings = make_settings(storage=section)
        store = open_storage(settings)
        await store.put_bytes("a/b.txt", b"over https")
        assert await store.get_bytes("a/b.txt") == b"over https"
        await store.close()

        # Without our CA the same endpoint is refused (the system trust does not know it).
        plain = open_storage(make_settings(storage=server.storage("tlsbucket")))
        with pytest.raises(Unavailable, match="SSLError"):
            await plain.get_bytes("a/b.txt")
        await plain.close()
    finally:
        server.stop()
