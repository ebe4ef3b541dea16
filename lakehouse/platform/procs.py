"""Child-process helpers shared by the supervisor and the test fixtures."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def find_binary(name: str) -> str:
    """A binary installed by a wheel into this interpreter's bin dir, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(
            f"{name} not found beside {sys.executable} or on PATH; "
            f"install the project (`make install`)"
        )
    return found


def nats_config_path() -> Path:
    """The repository's nats-server.conf (also used by deploy/)."""
    for candidate in (Path.cwd() / "nats-server.conf", REPO_ROOT / "nats-server.conf"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("nats-server.conf not found in the working directory or repo root")


NATS_SYNC = re.compile(r"default|always|\d+(ms|s|m|h)")
"""Values of ``supervisor.nats_sync``: nats-server's own ``sync_interval`` (2 minutes),
an fsync before every acknowledgement, or a period."""


def with_nats_sync(text: str, sync: str) -> str:
    """The nats-server config ``text`` with ``jetstream { sync_interval: <sync> }`` ("default":
    ``text`` unchanged). Set inside the file's own jetstream block: a second block would
    replace the first whole (nats-server 2.15 keeps only the last; its limits would go)."""
    if not NATS_SYNC.fullmatch(sync):
        raise ValueError(f"nats sync {sync!r}: default, always or a period such as 10s")
    if sync == "default":
        return text
    text = re.sub(r"(?m)^[ \t]*sync_interval\s*[:=].*\n?", "", text)
    line = f"sync_interval: {sync if sync == 'always' else json.dumps(sync)}"
    block = re.compile(r"(?m)^([ \t]*)jetstream[ \t]*[:=]?[ \t]*\{")
    if not block.search(text):
        return f"{text.rstrip()}\n\njetstream {{\n  {line}\n}}\n"
    return block.sub(lambda m: f"{m.group(0)}\n{m.group(1)}  {line}", text, count=1)


def nats_server_argv(
    port: int,
    store_dir: Path,
    host: str = "127.0.0.1",
    config: Path | None = None,
    sync: str = "default",
) -> list[str]:
    """Command line for the embedded server: ``config`` (default: the repo's), with address,
    port and store given as flags. The flags win over the file's ``listen``/``port``; the
    file must not set ``jetstream { store_dir }`` (nats-server refuses it beside ``-sd``).
    ``sync`` other than "default" (see :func:`with_nats_sync`; nats-server has no flag for
    it) runs a copy of the config with it, written to ``store_dir/nats-server.conf``."""
    conf = config or nats_config_path()
    if sync != "default":
        text = with_nats_sync(conf.read_text(), sync)
        store_dir.mkdir(parents=True, exist_ok=True)
        conf = store_dir / "nats-server.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may name users
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    return [
        find_binary("nats-server"),
        "-c",
        str(conf),
        "-js",
        "-a",
        host,
        "-p",
        str(port),
        "-sd",
        str(store_dir),
    ]


def all_cores() -> int:
    """CPUs this process may run on (the affinity mask, as in a container), else the count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the parent dies, even by kill -9 (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


_HANDED_OUT: set[int] = set()


def free_port(avoid_plus: int = 0) -> int:
    """A free loopback TCP port; with ``avoid_plus`` also require port+avoid_plus free.

    A port is free only until someone binds it, and callers often pick several before
    starting anything (a cluster's client and route ports): so a port this process
    handed out once is never handed out again."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port in _HANDED_OUT or (avoid_plus and port + avoid_plus in _HANDED_OUT):
            continue
        if avoid_plus and not (port + avoid_plus < 65536 and port_is_free(port + avoid_plus)):
            continue
        _HANDED_OUT.add(port)
        if avoid_plus:
            _HANDED_OUT.add(port + avoid_plus)
        return port
    raise RuntimeError("no free port found")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0
