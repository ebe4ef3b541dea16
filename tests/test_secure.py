"""``lakehouse up --secure`` as a real subprocess: on first start it makes the CA, the
certificates, an admin key (0600, its location in the banner, never the key) and the NATS
users; the gateway answers only over HTTPS and only with a key; NATS only TLS clients with
credentials; the CLI works against it (keys, the verbs over HTTPS, the operator verbs as the
admin NATS user); no key or password reaches the log."""

from __future__ import annotations

import os
import re
import signal
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import project_env
from lakehouse.platform.procs import REPO_ROOT, free_port

README = (REPO_ROOT / "README.md").read_text()

pytestmark = pytest.mark.slow


def cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lakehouse", *argv],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_up_secure_runs_the_stack_with_keys_nats_users_and_tls(tmp_path: Path) -> None:
    import nats

    http_port, nats_port = free_port(), free_port()
    data = tmp_path / "data"  # the README's ./data, run from tmp_path
    secrets = data / "secrets"
    [readme] = re.findall(r"```sh example-secure\n(.*?)```", README, flags=re.S)
    first, *rest = readme.strip().splitlines()
    assert first.split("#")[0].split() == ["lakehouse", "up", "--secure"]
    argv = [
        sys.executable, "-m", "lakehouse", "up", "--secure",
        "--http-port", str(http_port),
        "--nats-port", str(nats_port),
        "--workers", "catalog,ingest,query",
    ]  # fmt: skip
    log_path = tmp_path / "up.log"
    log = log_path.open("wb")
    up = subprocess.Popen(
        argv, env=project_env(), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"https://127.0.0.1:{http_port}"
    try:
        wait_until(lambda: "Lakehouse is up" in log_path.read_text(), 60, 0.1, what="banner")
        ca = secrets / "ca.pem"
        admin_key = (secrets / "admin.key").read_text().strip()
        for private in (secrets / "admin.key", secrets / "server-key.pem", secrets / "keys.json"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
        banner = log_path.read_text()
        assert str(secrets / "admin.key") in banner and admin_key not in banner
        assert f"gateway   {base}" in banner

        admin = {"Authorization": f"Bearer {admin_key}"}
        trust = ssl.create_default_context(cafile=str(ca))
        async with httpx.AsyncClient(base_url=base, verify=trust, timeout=30) as c:
            health = (await c.get("/health")).json()
            assert health["gateway"]["auth"] == "api keys" and health["gateway"]["tls"] is True
            assert (await c.get("/v1/catalog")).status_code == 401
            csv = b"id,name\n1,Ann\n2,Bob\n"
            r = await c.post("/v1/ingest?name=crew", content=csv, headers=admin)
            assert r.status_code == 200, r.text

        # The README's lines after `up`, as written (the gateway on this test's port).
        script = "\n".join(rest).replace("127.0.0.1:3110", f"127.0.0.1:{http_port}")
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        shown = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env={**project_env(), "PATH": path},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("lh_") and '"crew"' in shown.stdout, shown.stdout
        with pytest.raises(httpx.ConnectError):  # a client without the CA
            httpx.get(f"{base}/health", timeout=5)
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the HTTPS port
            httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=5)

        # The CLI: a reader key, the verbs over HTTPS, an operator verb as admin on NATS.
        env = project_env()
        made = cli("keys", "create", "--role", "reader", "--data-dir", str(data), env=env)
        assert made.returncode == 0, made.stderr
        reader_key = made.stdout.strip()
        people = {**env, "LAKEHOUSE_URL": base, "LAKEHOUSE_CA": str(ca)}
        sql = cli("sql", "SELECT count(*) AS n FROM crew", "--format", "csv",
                  env={**people, "LAKEHOUSE_API_KEY": reader_key})  # fmt: skip
        assert sql.returncode == 0 and sql.stdout.split() == ["n", "2"], sql
        (tmp_path / "more.csv").write_text("id\n3\n")
        denied = cli("ingest", str(tmp_path / "more.csv"), "--name", "more",
                     env={**people, "LAKEHOUSE_API_KEY": reader_key})  # fmt: skip
        assert denied.returncode == 2 and "needs writer" in denied.stderr
        nats_url = f"nats://127.0.0.1:{nats_port}"
        verify = cli("verify", "--data-dir", str(data), "--nats-url", nats_url, env=env)
        assert verify.returncode == 0 and "verify: ok" in verify.stdout, verify

        # NATS: TLS only, and credentials required.
        with pytest.raises(Exception):  # noqa: B017 (plain TCP to a TLS-only server)
            await nats.connect(nats_url, connect_timeout=2, allow_reconnect=False)
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(secrets / "client.pem", secrets / "client-key.pem")
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(nats_url, tls=ctx, connect_timeout=2, allow_reconnect=False)

        # Nothing secret in the log of every process of the stack.
        text = log_path.read_text()
        passwords = [p.read_text().strip() for p in (secrets / "nats").glob("*.password")]
        for secret in [admin_key, reader_key, *passwords]:
            assert secret not in text
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        log.close()
