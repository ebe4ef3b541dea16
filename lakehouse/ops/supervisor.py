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

import httpx

from lakehouse.platform import backoff
from lakehouse.platform.bus import STREAMS, connect, provision
from lakehouse.platform.config import Settings, child_env, redact_url
from lakehouse.platform.procs import die_with_parent, nats_server_argv, port_open

log = logging.getLogger("lakehouse.supervisor")

HEALTHY_RUN = 30.0  # a child that ran this long resets its backoff


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    failures: int = field(default=0)


class Supervisor:
    def __init__(self, settings: Settings, kinds: list[str], *, start_nats: bool) -> None:
        self.settings = settings
        self.kinds = kinds
        self.start_nats = start_nats
        self.stopping = asyncio.Event()
        self.children: list[Child] = []
        self.nats: Child | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
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
            self.nats = Child("nats-server", nats_server_argv(port, data_dir / "nats"), env)
            tasks.append(asyncio.create_task(self._keep_running(self.nats)))
        try:
            nc = await connect(self.settings, "lakehouse-supervisor", deadline=30)
        except ConnectionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            await self._shutdown(tasks)
            return 1
        await provision(nc.jetstream(), STREAMS)
        await nc.close()

        exe = [sys.executable, "-m", "lakehouse"]
        replicas = self.settings.supervisor.replicas
        self.children.append(Child("gateway", [*exe, "gateway"], env))
        for kind in self.kinds:
            for i in range(max(0, replicas.get(kind, 1))):
                self.children.append(Child(f"{kind}-{i + 1}", [*exe, "worker", kind], env))
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
        base = f"http://{gw.host}:{gw.port}"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline and not self.stopping.is_set():
                try:
                    if (await client.get(f"{base}/health")).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        print(
            "\nLakehouse is up\n"
            f"  gateway   {base}   (API docs {base}/docs, health {base}/health)\n"
            f"  NATS      {redact_url(self.settings.nats.url)}\n"
            f"  storage   {self.settings.storage_url}\n"
            f"  workers   {', '.join(self.kinds) or 'none'}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )


def run_supervisor(settings: Settings, kinds: list[str], *, start_nats: bool) -> int:
    return asyncio.run(Supervisor(settings, kinds, start_nats=start_nats).run())
