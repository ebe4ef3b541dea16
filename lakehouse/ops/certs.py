"""A development CA and the certificates a secured stack uses (``lakehouse certs``,
``lakehouse up --secure``).

:func:`ensure` makes, under one directory, what is missing of:

- ``ca.pem`` / ``ca-key.pem``: the CA every process trusts (``tls.ca_file``);
- ``server.pem`` / ``server-key.pem``: nats-server (clients and cluster routes), the gateway
  (HTTPS) and S3; extended key usage serverAuth and clientAuth, because a route between
  nats-servers is a client of the other node with the same certificate;
- ``client.pem`` / ``client-key.pem``: what a NATS client presents for mutual TLS.

Existing files are kept, so a second call changes nothing. :func:`issue` signs one more
leaf (say, one per node of a cluster). Keys are EC P-256; private keys are mode 0600, and a
directory it creates is mode 0700.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lakehouse.platform.auth import write_secret_file

CA_DAYS = 3650
LEAF_DAYS = 825
"""The longest validity clients (Apple's, browsers) accept for a server certificate."""
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
SERVER_USAGE = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
CLIENT_USAGE = (ExtendedKeyUsageOID.CLIENT_AUTH,)


@dataclass(frozen=True)
class CertPaths:
    """What :func:`ensure` made or found; ``created`` names the files it wrote this time."""

    dir: Path
    ca: Path
    ca_key: Path
    server: Path
    server_key: Path
    client: Path
    client_key: Path
    created: tuple[Path, ...] = field(default=(), compare=False)

    @classmethod
    def under(cls, dir: Path) -> CertPaths:
        """Where :func:`ensure` keeps each file in ``dir`` (whether made yet or not)."""
        return cls(
            dir=dir,
            ca=dir / "ca.pem",
            ca_key=dir / "ca-key.pem",
            server=dir / "server.pem",
            server_key=dir / "server-key.pem",
            client=dir / "client.pem",
            client_key=dir / "client-key.pem",
        )

    def all(self) -> tuple[Path, ...]:
        return (self.ca, self.ca_key, self.server, self.server_key, self.client, self.client_key)


def ensure(dir: Path, hosts: Sequence[str] = ()) -> CertPaths:
    """Make the CA, the server and the client certificate under ``dir`` where missing.

    The server certificate names 127.0.0.1, localhost and each of ``hosts`` (an IP address
    or a DNS name). A certificate whose key is missing is made again (with a new key);
    a missing CA makes every leaf again, since the old ones no longer chain to it."""
    dir = Path(dir)
    _private_dir(dir)
    paths = CertPaths.under(dir)
    created: list[Path] = []
    if not (paths.ca.exists() and paths.ca_key.exists()):
        _make_ca(paths.ca, paths.ca_key)
        created += [paths.ca, paths.ca_key]
        for p in (paths.server, paths.server_key, paths.client, paths.client_key):
            p.unlink(missing_ok=True)
    if not (paths.server.exists() and paths.server_key.exists()):
        _make_leaf(dir, "server", [*DEFAULT_HOSTS, *hosts], SERVER_USAGE)
        created += [paths.server, paths.server_key]
    if not (paths.client.exists() and paths.client_key.exists()):
        _make_leaf(dir, "client", [], CLIENT_USAGE)
        created += [paths.client, paths.client_key]
    return replace(paths, created=tuple(created))


def hosts_of(cert: Path) -> tuple[str, ...]:
    """The names (IP addresses and DNS names) a certificate's SAN lists."""
    c = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return (
        *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
        *san.get_values_for_type(x509.DNSName),
    )


def issue(dir: Path, name: str, hosts: Sequence[str] = ()) -> tuple[Path, Path]:
    """One more leaf ``dir/<name>.pem`` (+ ``<name>-key.pem``) signed by the CA of ``dir``
    (made by :func:`ensure` if missing), for 127.0.0.1, localhost and ``hosts``; usable as
    server and client (a nats-server node). Replaces an existing ``name``."""
    if not name or "/" in name or name.startswith(".") or name in ("ca", "ca-key"):
        raise ValueError(f"bad certificate name {name!r}")
    ensure(dir)
    return _make_leaf(Path(dir), name, [*DEFAULT_HOSTS, *hosts], SERVER_USAGE)


# ---- internals -------------------------------------------------------------------------


def _private_dir(dir: Path) -> None:
    """Create ``dir`` mode 0700; an existing one keeps its mode (``--out /tmp`` must not
    close /tmp), the keys in it are 0600 anyway."""
    if not dir.is_dir():
        dir.mkdir(parents=True, mode=0o700)
        os.chmod(dir, 0o700)  # whatever the umask


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret_file(path, pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lakehouse dev CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        host = host.strip()
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _make_ca(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("Lakehouse dev CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def _usage(*, ca: bool) -> x509.KeyUsage:
    """Key usage of the CA (signs certificates and CRLs) or of a leaf (signs handshakes,
    ECDH key agreement)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _load_ca(dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((dir / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((dir / "ca-key.pem").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{dir / 'ca-key.pem'} is not an EC private key")
    return cert, key


def _make_leaf(
    dir: Path,
    name: str,
    hosts: Sequence[str],
    usage: Sequence[x509.ObjectIdentifier],
) -> tuple[Path, Path]:
    ca_cert, ca_key = _load_ca(dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(f"lakehouse {name}"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = dir / f"{name}.pem", dir / f"{name}-key.pem"
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path
