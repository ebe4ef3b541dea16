"""deploy/ stays in step with the code (no Docker engine runs here, so parse, don't run)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.main import get_command

from lakehouse.ops.cli.main import app
from lakehouse.platform.procs import REPO_ROOT
from workers import KINDS

COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"


def services() -> dict[str, dict[str, object]]:
    doc = yaml.safe_load(COMPOSE.read_text())
    return doc["services"]  # type: ignore[no-any-return]


def test_every_worker_kind_has_a_service() -> None:
    commands = {tuple(s.get("command", [])) for s in services().values()}  # type: ignore[arg-type]
    missing = [k for k in KINDS if ("worker", k) not in commands]
    assert not missing, f"deploy/compose.yaml has no service for worker kind(s): {missing}"


def test_every_project_service_runs_an_existing_command() -> None:
    cli = get_command(app)
    names = set(cli.commands)  # type: ignore[attr-defined]
    for name, svc in services().items():
        if svc.get("image") != "lakehouse:latest":
            continue
        argv = svc["command"]
        assert isinstance(argv, list) and argv[0] in names, f"{name}: unknown command {argv}"
        if argv[0] == "worker":
            assert argv[1] in KINDS, f"{name}: unknown worker kind {argv[1]}"


def test_dockerfile_copies_every_package() -> None:
    text = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    for pkg in ("lakehouse", "gateway", "workers", "schemas"):
        assert f"COPY {pkg} ./{pkg}" in text
    assert Path(REPO_ROOT / "nats-server.conf").exists()
