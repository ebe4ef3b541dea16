"""Linux network namespaces as hosts, for partition tests and ``lakehouse cluster --netns``.

A switch namespace holds a bridge; each machine is a namespace joined to it by a veth pair,
with an address in ``10.231.1.0/24`` that exists only inside the namespaces made here (the
machine's own root namespace never gets one, and nothing is routed anywhere else).
:meth:`Network.cut` sets a machine's switch port down, a real cut link in both directions;
:meth:`Network.heal` brings it back.

A process runs on a machine through :meth:`Network.prefix` (``ip netns exec``); a function
runs there through :meth:`Network.call` (a thread that has joined the namespace: the sockets
it opens and the processes it starts live there). :meth:`Network.delete` removes everything
this object made. Needs root (CAP_NET_ADMIN) and iproute2: :func:`unavailable` says why not.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
SUBNET = "10.231.1"


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    if not shutil.which("ip"):
        return "network namespaces need iproute2 (`ip`)"
    return None


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


@dataclass
class Network:
    """Machines on one switch. ``tag`` keeps namespace and link names unique per owner (the
    process id by default), so two networks on one machine never meet."""

    tag: str = field(default_factory=lambda: f"lh{os.getpid() % 100000}")
    machines: dict[str, str] = field(default_factory=dict)  # name -> address
    _ports: dict[str, str] = field(default_factory=dict)  # name -> switch-side link

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def namespace(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def create(self) -> Network:
        problem = unavailable()
        if problem:
            raise RuntimeError(problem)
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def add(self, name: str) -> str:
        """A new machine ``name`` on the switch; its address."""
        i = len(self.machines) + 1
        ns, port, inside = self.namespace(name), f"{self.tag}s{i}", f"{self.tag}h{i}"
        address = f"{SUBNET}.{10 + i}"
        _ip("netns", "add", ns)
        _ip("link", "add", inside, "type", "veth", "peer", "name", port)
        _ip("link", "set", inside, "netns", ns)
        _ip("link", "set", port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")
        _ip("-n", ns, "link", "set", inside, "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        self.machines[name] = address
        self._ports[name] = port
        return address

    def address(self, name: str) -> str:
        return self.machines[name]

    def prefix(self, name: str) -> list[str]:
        """The argv prefix that runs a command on machine ``name``."""
        return ["ip", "netns", "exec", self.namespace(name)]

    def cut(self, name: str) -> None:
        """Disconnect machine ``name`` from every other (its processes keep running)."""
        _ip("-n", self.switch, "link", "set", self._ports[name], "down")

    def heal(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self._ports[name], "up")

    def call(self, name: str, fn: Callable[[], T]) -> T:
        """``fn()`` run by a thread inside machine ``name``'s namespace."""
        result: list[Any] = []

        def inside() -> None:
            try:
                libc = ctypes.CDLL("libc.so.6", use_errno=True)
                fd = os.open(f"/run/netns/{self.namespace(name)}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns into {name}")
                finally:
                    os.close(fd)
                result.append((True, fn()))
            except BaseException as exc:  # handed to the caller's thread
                result.append((False, exc))

        thread = threading.Thread(target=inside, name=f"netns-{name}", daemon=True)
        thread.start()
        thread.join()
        ok, value = result[0]
        if not ok:
            raise value
        return value

    def delete(self) -> None:
        """Remove every namespace made here (their links go with them). Safe to call twice."""
        for name in [*self.machines, None]:
            ns = self.switch if name is None else self.namespace(name)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.machines.clear()
        self._ports.clear()
