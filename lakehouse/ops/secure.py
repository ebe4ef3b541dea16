"""``lakehouse up --secure``: everything a secured single-node stack needs, made once under
``<data_dir>/secrets`` and reused on every later start.

- ``ca.pem`` (the CA to trust), ``server.pem`` (the gateway's HTTPS and nats-server's TLS,
  also the gateway's NATS client certificate), ``client.pem`` (the workers' and the CLI's
  NATS client certificate): :mod:`lakehouse.ops.certs`.
- ``admin.key``: the first admin API key (mode 0600; its hash in ``keys.json``).
- ``nats/<user>.password``: one NATS user per service, and ``nats-server.conf``: their
  bcrypt hashes and permissions (:mod:`lakehouse.platform.natsauth`), TLS with client
  certificates required.

:func:`client_overrides` lets every other command pointed at the same ``--data-dir`` (``dlq``,
``replay``, ``gc``, ...) connect as the ``admin`` NATS user over TLS without more flags.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.ops import certs
from lakehouse.platform import natsauth
from lakehouse.platform.auth import LOOPBACK, KeyStore, Role, write_secret_file
from lakehouse.platform.config import Settings, TlsSettings, merged
from lakehouse.platform.procs import nats_config_path

ADMIN_KEY = "admin.key"
SERVER_CONF = "nats-server.conf"


@dataclass(frozen=True)
class Secrets:
    dir: Path
    paths: certs.CertPaths
    admin_key: Path
    nats_conf: Path
    made_admin_key: bool


def prepare(settings: Settings, workers: dict[str, Any]) -> Secrets:
    """Make what is missing under ``settings.secrets_dir``; the NATS server config is
    written afresh each time (its permissions follow the code)."""
    folder = settings.secrets_dir.resolve()
    host = settings.gateway.host
    hosts = (
        [] if host in LOOPBACK else [socket.gethostname()] + ([host] if host != "0.0.0.0" else [])
    )
    paths = certs.ensure(folder, hosts)
    admin_key = folder / ADMIN_KEY
    made = not admin_key.exists()
    if made:
        key, _ = KeyStore(settings.keys_file).create(Role.admin, label="lakehouse up --secure")
        write_secret_file(admin_key, key + "\n")
    passwords = natsauth.ensure_passwords(folder)
    server_tls = TlsSettings(ca_file=paths.ca, cert_file=paths.server, key_file=paths.server_key)
    conf = natsauth.server_config(
        passwords,
        workers=workers,
        tls=server_tls,
        upstream_indexes=settings.auth.upstream_indexes,
    )
    base = nats_config_path().read_text()  # the same limits as an unsecured stack
    write_secret_file(folder / SERVER_CONF, f"{base}\n# lakehouse up --secure\n{conf}")
    return Secrets(folder, paths, admin_key, folder / SERVER_CONF, made)


def stack_settings(settings: Settings, secrets: Secrets) -> Settings:
    """The supervisor's own settings on a secured stack (what its children inherit, less
    their user): TLS to NATS, the gateway serving HTTPS."""
    p = secrets.paths
    port = settings.supervisor.nats_port
    return settings.model_copy(
        update={
            "tls": TlsSettings(ca_file=p.ca, cert_file=p.client, key_file=p.client_key),
            "nats": settings.nats.model_copy(
                update={"url": f"tls://127.0.0.1:{port}", **user_of(natsauth.SUPERVISOR, secrets)}
            ),
        }
    )


def user_of(user: str, secrets: Secrets) -> dict[str, Any]:
    return dict(natsauth.client_settings(user, secrets.dir)["nats"])


def child_env(user: str, secrets: Secrets) -> dict[str, str]:
    """What a child process adds to the stack's environment: its NATS user, and for the
    gateway the server certificate (HTTPS, and its NATS client certificate)."""
    env = natsauth.client_env(user, secrets.dir)
    if user == natsauth.GATEWAY:
        env["LAKEHOUSE_TLS__CERT_FILE"] = str(secrets.paths.server)
        env["LAKEHOUSE_TLS__KEY_FILE"] = str(secrets.paths.server_key)
    return env


def client_overrides(data_dir: Path) -> dict[str, Any]:
    """For any command given the ``--data-dir`` of a stack started with ``--secure``: the
    ``admin`` NATS user and the client certificate; nothing for any other data dir."""
    folder = (data_dir / "secrets").resolve()
    if not (folder / "nats" / f"{natsauth.ADMIN}.password").exists():
        return {}
    p = certs.CertPaths.under(folder)
    tls = {"ca_file": p.ca, "cert_file": p.client, "key_file": p.client_key}
    return merged(natsauth.client_settings(natsauth.ADMIN, folder), {"tls": tls})
