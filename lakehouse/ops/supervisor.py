"""``lakehouse up``: start NATS (unless external), the gateway and every worker kind;
restart a child that dies (with backoff); on SIGINT/SIGTERM drain children, then NATS."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from lakehouse.ops import secure
from lakehouse.platform import backoff
from lakehouse.platform.bus import STARTUP_DEADLINE, STREAMS, connect, provision
from lakehouse.platform.config import Settings, child_env, redact_url
from lakehouse.platform.procs import all_cores, die_with_parent, nats_server_argv, port_open
from lakehouse.platform.tlsctx import client_context

log = logging.getLogger("lakehouse.supervisor")

HEALTHY_RUN = 30.0  # a child that ran this long resets its backoff


def split_cores(settings: Settings, kind: str, copies: int) -> dict[str, str]:
    """Settings for each of ``copies`` embed workers on this machine: the cores divided between
    them, unless ``embed.threads`` says otherwise. Workers that each use every core slow each
    other down (2 on 2 cores: 0.88× one worker); one core each kept 96%, 81% and 100% of the
    model's own speed on full resumes against 82%, 87% and 76% for one worker on both cores
    (docs/BENCHMARKS.md, "Embed replicas")."""
    if kind != "embed" or copies < 2 or settings.embed.threads:
        return {}
    return {"LAKEHOUSE_EMBED__THREADS": str(max(1, all_cores() // copies))}


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    failures: int = field(default=0)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        kinds: list[str],
        *,
        start_nats: bool,
        workers: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.kinds = kinds
        self.start_nats = start_nats
        self.workers = workers or {}  # kind -> worker class (for the NATS permissions)
        self.secrets: secure.Secrets | None = None
        self.stopping = asyncio.Event()
        self.children: list[Child] = []
        self.nats: Child | None = None

    def env_for(self, env: dict[str, str], user: str) -> dict[str, str]:
        """A child's environment: the stack's, plus its own NATS user when secured."""
        return {**env, **secure.child_env(user, self.secrets)} if self.secrets else env

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        conf = None
        if self.settings.supervisor.secure:
            self.secrets = secure.prepare(self.settings, self.workers)
            self.settings = secure.stack_settings(self.settings, self.secrets)
            conf = self.secrets.nats_conf
        env = {**os.environ, **child_env(self.settings)}
        tasks = []
        if self.start_nats:
            port = self.settings.supervisor.nats_port
            if port_open("127.0.0.1", port):
                log.error("port in use", extra={"port": port})
                print(
                    f"error: port {port} is in use; pass --nats-port or --nats-url", file=sys.stderr
                )
                return 2
            sync = self.settings.supervisor.nats_sync
            argv = nats_server_argv(port, data_dir / "nats", config=conf, sync=sync)
            self.nats = Child("nats-server", argv, env)
            tasks.append(asyncio.create_task(self._keep_running(self.nats)))
        try:
            nc = await connect(self.settings, "lakehouse-supervisor", deadline=30)
        except ConnectionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            await self._shutdown(tasks)
            return 1
        await provision(
            nc.jetstream(),
            STREAMS,
            replicas=self.settings.nats.replicas,
            patience=STARTUP_DEADLINE,
        )
        await nc.close()

        exe = [sys.executable, "-m", "lakehouse"]
        replicas = self.settings.supervisor.replicas
        self.children.append(Child("gateway", [*exe, "gateway"], self.env_for(env, "gateway")))
        for kind in self.kinds:
            copies = max(0, replicas.get(kind, 1))
            kind_env = {**self.env_for(env, kind), **split_cores(self.settings, kind, copies)}
            for i in range(copies):
                self.children.append(Child(f"{kind}-{i + 1}", [*exe, "worker", kind], kind_env))
        tasks += [asyncio.create_task(self._keep_running(c)) for c in self.children]
        await self._announce()
        await self.stopping.wait()
        await self._shutdown(tasks)
        return 0

    def _on_signal(self, sig: int) -> None:
        if not self.stopping.is_set():
            log.info("shutting down", extra={"signal": signal.Signals(sig).name})
            print("\nstopping: draining workers...", file=sys.stderr)
            self.stopping.set()

    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        # A new session keeps the terminal's Ctrl-C away from children: the supervisor
        # stops them in order (workers drain before NATS goes away).
        return await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    async def _keep_running(self, child: Child) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            child.proc = await self._spawn(child)
            log.info("started", extra={"child": child.name, "pid": child.proc.pid})
            if self.stopping.is_set() and child is not self.nats:
                child.proc.send_signal(signal.SIGTERM)  # spawned while stopping began
            rc = await child.proc.wait()
            if self.stopping.is_set():
                return
            ran = time.monotonic() - started
            child.failures = 0 if ran > HEALTHY_RUN else child.failures + 1
            delay = backoff.delay(child.failures, 0.5, self.settings.supervisor.restart_backoff_max)
            child.restarts += 1
            log.warning(
                "child exited; restarting",
                extra={
                    "child": child.name,
                    "returncode": rc,
                    "ran_s": round(ran, 1),
                    "restart": child.restarts,
                    "delay_s": delay,
                },
            )
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _stop_children(self, children: list[Child]) -> None:
        live = [c.proc for c in children if c.proc and c.proc.returncode is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        if not live:
            return
        waits = [asyncio.create_task(p.wait()) for p in live]
        _, pending = await asyncio.wait(waits, timeout=self.settings.supervisor.stop_timeout)
        for p in live:
            if p.returncode is None:
                log.warning("child did not stop in time; killing", extra={"pid": p.pid})
                p.kill()
        if pending:
            await asyncio.wait(pending)

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        self.stopping.set()
        await self._stop_children(self.children)
        if self.nats:
            await self._stop_children([self.nats])
        await asyncio.gather(*tasks, return_exceptions=True)
        log.info("stopped")

    async def _announce(self) -> None:
        gw = self.settings.gateway
        scheme = "https" if self.secrets else "http"
        base = f"{scheme}://{gw.host}:{gw.port}"
        deadline = time.monotonic() + 60
        verify = client_context(self.settings.tls) or True
        async with httpx.AsyncClient(timeout=2, verify=verify) as client:
            while time.monotonic() < deadline and not self.stopping.is_set():
                try:
                    if (await client.get(f"{base}/health")).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        text = banner(
            [base], self.settings.nats.url, self.settings.storage_url, self.kinds,
            self._security_lines(),
        )  # fmt: skip
        print(text, flush=True)

    def _security_lines(self) -> str:
        if self.secrets is None:
            if self.settings.auth.insecure_no_auth:
                return "  auth      NONE: --insecure-no-auth (everyone who can reach it is admin)\n"
            return ""
        s = self.secrets
        made = " (new)" if s.made_admin_key else ""
        return (
            f"  secured   API keys, NATS users per service, TLS (CA {s.paths.ca})\n"
            f"  admin key {s.admin_key}{made}: export LAKEHOUSE_API_KEY=$(cat {s.admin_key})\n"
        )


def banner(gateways: list[str], nats_url: str, storage: str, kinds: list[str], more: str) -> str:
    """What ``lakehouse up`` (and ``lakehouse cluster``) print once the stack serves; ``more``:
    lines of their own, each ending in a newline."""
    lines = ["", "Lakehouse is up"]
    for base in gateways:
        lines.append(f"  gateway   {base}   (API docs {base}/docs, health {base}/health)")
    lines += [
        f"  NATS      {redact_url(nats_url)}",
        f"  storage   {redact_url(storage)}",
        f"  workers   {', '.join(kinds) or 'none'}",
        f"  metrics   {gateways[0]}/metrics; each worker's port: /health, `lakehouse status`",
    ]
    return "\n".join(lines) + "\n" + more + "Press Ctrl-C to stop.\n"


def run_supervisor(
    settings: Settings,
    kinds: list[str],
    *,
    start_nats: bool,
    workers: dict[str, Any] | None = None,
) -> int:
    return asyncio.run(Supervisor(settings, kinds, start_nats=start_nats, workers=workers).run())
