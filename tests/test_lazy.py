"""The gateway starts without pyarrow and duckdb (imported by the first request that needs
them), and the stand-in modules behave like the modules."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from lakehouse.platform import lazy
from lakehouse.platform.procs import REPO_ROOT

HEAVY = ("pyarrow", "duckdb", "httpx")


def imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_the_gateway_app_imports_no_heavy_library() -> None:
    assert imported_after("from gateway.app import create_app; create_app()") == set()


def test_the_workers_still_get_the_libraries_they_use() -> None:
    # The same shared modules, used by a worker: the proxy imports on first use.
    code = (
        "import numpy as np\n"
        "from lakehouse.vectors import batches\n"
        "list(batches.batches(['a'], np.zeros((1, 4), 'f4'), [None], dim=4, partitions=1))"
    )
    assert "pyarrow" in imported_after(code)


def test_a_deferred_module_reads_like_the_module() -> None:
    json_ = lazy.module("json")
    assert json_.dumps([1]) == "[1]"
    assert json_.loads is __import__("json").loads
    assert "dumps" in vars(json_)  # held by the proxy after the first read
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = json_.nope


def test_loaded_imports_in_a_thread() -> None:
    name = "colorsys"  # a standard module nothing here imports
    sys.modules.pop(name, None)
    asyncio.run(lazy.loaded(name, "json"))
    assert name in sys.modules
