"""Closed-loop load for the concurrency workloads: C client threads each calling in a loop
for a fixed time (:func:`drive`, one :class:`Point` of QPS and latencies), and the CPU every
process of a stack used meanwhile (:func:`processes`, :func:`cpu_of`, :func:`cpu_note`).

Clients are threads, each with its own keep-alive ``http.client`` connection (:class:`Client`)
and request bodies encoded once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil

from lakehouse.devtools.bench.workloads import Lean, p
from lakehouse.devtools.stack import Stack


class Client(Lean):
    """``Lean`` that sends a body encoded once (a 384-float JSON costs the client ~0.1 ms)."""

    def send(self, path: str, body: bytes) -> Any:
        self.conn.request("POST", path, body, {"content-type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"POST {path} -> {r.status}: {data[:300]!r}")
        return json.loads(data)


@dataclass
class Point:
    qps: float
    ms: list[float]
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core, by process
    detail: str = ""

    @property
    def p50(self) -> float:
        return p(self.ms, 0.5)

    @property
    def p99(self) -> float:
        return p(self.ms, 0.99)


Call = Callable[[int], None]


def drive(clients: int, seconds: float, make: Callable[[], Call], warm: int = 3) -> Point:
    """``clients`` threads, each with its own ``make()`` call (a connection, a cursor),
    warmed ``warm`` times, then calling it in a closed loop (query ``i``, ``i + clients``,
    ... from its own offset) until ``seconds`` have passed: requests per second over the
    whole run and every request's milliseconds. An error in any client stops all of them
    and is raised."""
    start = threading.Barrier(clients + 1)
    stop = threading.Event()
    ms: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            call = make()
            for i in range(warm):
                call(c + i * clients)
            start.wait()
            mine, i, clock = ms[c], c, time.perf_counter
            while not stop.is_set():
                t = clock()
                call(i)
                mine.append((clock() - t) * 1000)
                i += clients
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:  # raised again by the caller
            errors.append(exc)
            stop.set()
            start.abort()

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    done = [x for m in ms for x in m]
    return Point(len(done) / elapsed, done)


# ---- CPU of each process --------------------------------------------------------------------


def processes(stack: Stack) -> dict[str, psutil.Process]:
    """The stack's processes by role: ``gateway``, ``vectors``/``query``/... (``#2`` for a
    second replica), ``nats-server``, ``supervisor`` (``lakehouse up``) and ``clients`` (this
    process)."""
    body = stack.health() or {}
    out = {"gateway": psutil.Process(int(body["gateway"]["pid"]))}
    for kind, entry in sorted(body.get("workers", {}).items()):
        for n, inst in enumerate(sorted(entry["instances"], key=lambda i: int(i["pid"]))):
            out[kind if n == 0 else f"{kind}#{n + 1}"] = psutil.Process(int(inst["pid"]))
    for name, group in stack.procs.items():
        for started in group:
            if name == "up":  # `lakehouse up` itself
                out["supervisor"] = psutil.Process(started.pid)
            for child in psutil.Process(started.pid).children(recursive=True):
                if child.name().startswith("nats-server"):
                    out["nats-server"] = child
    out["clients"] = psutil.Process()
    return out


@contextmanager
def cpu_of(procs: dict[str, psutil.Process], into: dict[str, float]) -> Iterator[None]:
    """Fill ``into`` with each process's CPU over the block, % of one core, and ``not ours``:
    what the rest of the machine used meanwhile (other people's work on a shared box)."""

    def used() -> dict[str, float]:
        out = {}
        for name, proc in procs.items():
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            out[name] = t.user + t.system
        return out

    def machine() -> float:  # busy seconds of all cores together (guest time is in user)
        t = psutil.cpu_times()
        spare = ("idle", "iowait", "guest", "guest_nice")
        return float(sum(t)) - sum(getattr(t, name, 0.0) for name in spare)

    before, busy, t = used(), machine(), time.perf_counter()
    yield
    after, wall = used(), time.perf_counter() - t
    into.update({k: (after[k] - before[k]) / wall * 100 for k in after if k in before})
    ours = sum(into.values())
    into["not ours"] = max(0.0, (machine() - busy) / wall * 100 - ours)


def cpu_note(cpu: dict[str, float]) -> str:
    busy = {k: v for k, v in cpu.items() if v >= 1}
    idle = "others < 1%" if len(busy) < len(cpu) else ""
    parts = [f"{k} {v:.0f}%" for k, v in sorted(busy.items(), key=lambda kv: -kv[1])]
    return "CPU (% of a core): " + ", ".join([*parts, *([idle] if idle else [])])
