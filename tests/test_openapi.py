"""The OpenAPI document tells the truth: schemathesis' default checks against a live stack.

Every route is exercised with generated requests (examples, coverage, fuzzing and stateful
phases; at most 12 examples per operation) against a real gateway, nats-server and one worker
of each kind, with an admin API key (and without it: every protected operation must answer
401). The checks: no 5xx, every status and header documented, bodies matching their
schemas, schema-valid requests accepted and schema-invalid ones rejected, 405 with ``Allow``.
The few places where a check cannot apply are configured, with the reason, in
``tests/schemathesis.toml``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from lakehouse.platform.auth import KeyStore, Role

pytestmark = pytest.mark.slow

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = os.environ.get("LAKEHOUSE_SCHEMATHESIS_SEED", "20261129")
"""Fixed so that the test is reproducible; set the variable to explore other inputs."""
BUDGET = 100
"""Seconds the run may take before it counts as a failure (about 45 s on 2 busy cores)."""


@pytest.mark.timeout(BUDGET + 60)
@pytest.mark.stack(kinds=("catalog", "ingest", "query", "embed", "vectors"))
def test_schemathesis_default_checks_pass_against_a_live_stack(
    stack: Stack, tmp_path: Path
) -> None:
    # With an API key configured: every operation is fuzzed with it, and schemathesis also
    # checks that each one refuses a request without it (401).
    key, _ = KeyStore(stack.settings.keys_file).create(Role.admin, label="schemathesis")
    wait_until(
        lambda: httpx.get(f"{stack.base}/v1/catalog").status_code == 401,
        what="the gateway to read the new key file",
    )
    reports = tmp_path / "reports"
    cmd = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{stack.base}/openapi.json",
        "--max-examples=12",
        "--workers=1",
        f"--seed={SEED}",
        "--request-timeout=30",
        "--generation-database=none",
        "--no-color",
        "--report=json",
        f"--header=Authorization: Bearer {key}",
        f"--report-dir={reports}",
    ]
    try:
        out = subprocess.run(
            cmd, cwd=tmp_path, capture_output=True, text=True, timeout=BUDGET, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"schemathesis ran longer than {BUDGET} s:\n{exc.stdout!r}") from None
    report = json.loads(next(reports.glob("json-*.json")).read_text())
    summary = {
        "seconds": round(report["running_time"], 1),
        "operations": report["operations"],
        "test_cases": report["test_cases"],
        "failures": {f["title"]: f["operations"] for f in report["failures"]},
        "errors": report["errors"],
    }
    assert out.returncode == 0, f"{out.stdout[-20000:]}\n{out.stderr[-4000:]}\n{summary}"
    assert report["operations"]["tested"] == report["operations"]["total"], summary
    assert not report["failures"] and not report["errors"], summary
    print(json.dumps(summary, indent=2))
