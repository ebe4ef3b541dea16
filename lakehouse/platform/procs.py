"""Child-process helpers shared by the supervisor and the test fixtures."""

from __future__ import annotations

import ctypes
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


def nats_server_argv(
    port: int, store_dir: Path, host: str = "127.0.0.1", config: Path | None = None
) -> list[str]:
    """Command line for the embedded server: ``config`` (default: the repo's), with address,
    port and store given as flags. The flags win over the file's ``listen``/``port``; the
    file must not set ``jetstream { store_dir }`` (nats-server refuses it beside ``-sd``)."""
    return [
        find_binary("nats-server"),
        "-c",
        str(config or nats_config_path()),
        "-js",
        "-a",
        host,
        "-p",
        str(port),
        "-sd",
        str(store_dir),
    ]


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the parent dies, even by kill -9 (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port(avoid_plus: int = 0) -> int:
    """A free loopback TCP port; with ``avoid_plus`` also require port+avoid_plus free."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not avoid_plus:
            return port
        if port + avoid_plus < 65536 and port_is_free(port + avoid_plus):
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
