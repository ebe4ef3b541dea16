"""deploy/ stays in step with the code (no Docker engine runs here, so parse, don't run)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from lakehouse import __version__
from lakehouse.ops.cli.main import app
from lakehouse.platform.config import Settings, load_settings
from lakehouse.platform.procs import REPO_ROOT, find_binary, nats_config_path
from schemas.subjects import WORKER_KINDS
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
        if not str(svc.get("image", "")).startswith("lakehouse:"):
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


# ---- deploy/compose.cluster.yaml: the clustered stack -------------------------------------

CLUSTER = REPO_ROOT / "deploy" / "compose.cluster.yaml"
NATS_NODES = ("nats-1", "nats-2", "nats-3")


def cluster_services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(CLUSTER.read_text())["services"]


def project_services(svcs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services running the project's image (built from deploy/Dockerfile)."""
    return {name: s for name, s in svcs.items() if "build" in s}


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def image_version(image: str) -> str:
    """``nats:2.15.1-alpine`` -> ``2.15.1``."""
    return image.rpartition(":")[2].split("-")[0].split("_")[0]


def test_cluster_runs_every_worker_kind_twice_and_two_gateways_behind_the_balancer() -> None:
    svcs = cluster_services()
    ours = project_services(svcs)
    by_command = {tuple(s["command"]): s for s in ours.values()}
    for kind in WORKER_KINDS:
        svc = by_command.get(("worker", kind))
        assert svc is not None, f"compose.cluster.yaml has no service for worker kind {kind}"
        assert svc.get("deploy", {}).get("replicas") == 2, f"worker {kind}: not 2 replicas"
    gateways = [n for n, s in ours.items() if s["command"][0] == "gateway"]
    assert len(gateways) == 2, gateways
    [lb] = [s for s in svcs.values() if s["image"].startswith(("nginx:", "haproxy:"))]
    [conf] = [v.split(":")[0] for v in lb["volumes"] if "/etc/nginx" in v or "haproxy" in v]
    text = (CLUSTER.parent / conf).read_text()
    for name in gateways:
        assert re.search(rf"\bserver\s+{name}:3110\b", text), f"{conf} does not name {name}"
    cli = get_command(app)
    for name, svc in ours.items():
        assert svc["command"][0] in cli.commands, f"{name}: unknown command"  # type: ignore[attr-defined]


def test_cluster_nats_nodes_form_one_cluster_of_the_embedded_version() -> None:
    svcs = cluster_services()
    nodes = {n: s for n, s in svcs.items() if s["image"].startswith("nats:")}
    assert sorted(nodes) == list(NATS_NODES)
    version = subprocess.run(
        [find_binary("nats-server"), "--version"], capture_output=True, text=True, check=True
    ).stdout  # "nats-server: v2.15.1"
    embedded = re.search(r"v(\d+\.\d+\.\d+)", version)
    assert embedded is not None, version
    configs = set()
    for name, svc in nodes.items():
        assert image_version(svc["image"]) == embedded.group(1), svc["image"]
        argv = svc["command"]
        assert flag(argv, "--server_name") == name
        routes = {r.split("//")[1].split(":")[0] for r in flag(argv, "--routes").split(",")}
        assert routes == set(NATS_NODES) - {name}, f"{name} routes to {routes}"
        configs.add(flag(argv, "-c"))
        assert any(v.endswith(":/data/nats") for v in svc["volumes"]), f"{name}: no store"
    [conf] = configs  # one file shared by the nodes: one cluster name
    [mount] = {v.split(":")[0] for s in nodes.values() for v in s["volumes"] if conf in v}
    text = (CLUSTER.parent / mount).read_text()
    assert re.search(r"cluster\s*\{[^}]*name:\s*\w+", text), "no cluster name"
    assert "store_dir" not in re.sub(r"#.*", "", text)  # -sd sets it (nats-server refuses both)
    # The embedded server's limits hold for the cluster too.
    base = nats_config_path().read_text()
    for key in ("max_payload", "max_memory_store", "max_file_store"):
        [want] = re.findall(rf"^\s*{key}:.*$", base, flags=re.M)
        assert want.strip() in text, f"{mount}: {want.strip()} missing"


def test_cluster_seaweedfs_servers_match_the_wheel() -> None:
    svcs = cluster_services()
    weed = {n: s for n, s in svcs.items() if s["image"].startswith("chrislusf/seaweedfs:")}
    roles = sorted(s["command"][0] for s in weed.values())
    assert roles == ["filer", "master", "s3", "volume", "volume", "volume"], roles
    [master] = [s for s in weed.values() if s["command"][0] == "master"]
    assert "-defaultReplication=001" in master["command"]
    out = subprocess.run([find_binary("weed"), "version"], capture_output=True, text=True)
    version = re.search(r"version (\S+) (\d+\.\d+)", out.stdout)  # "version 8000GB 4.48 ..."
    assert version is not None, out.stdout
    large = "_large_disk" if version.group(1) != "30GB" else ""
    for compose in (cluster_services(), services()):
        for svc in compose.values():
            image = str(svc["image"])
            if image.startswith("chrislusf/seaweedfs:"):
                assert image.endswith(f":{version.group(2)}{large}"), image


def test_cluster_images_are_pinned() -> None:
    for path, svcs in ((CLUSTER, cluster_services()), (COMPOSE, services())):
        for name, svc in svcs.items():
            image = str(svc.get("image", ""))
            repo, _, tag = image.rpartition(":")
            assert repo and tag and tag != "latest", f"{path.name}: {name} image {image!r}"
    for svcs in (cluster_services(), services()):
        for svc in project_services(svcs).values():
            assert svc["image"] == f"lakehouse:{__version__}"


def test_cluster_settings_are_real_and_name_every_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every LAKEHOUSE_* variable names a Settings field (``__`` nests), and the values, as
    compose would pass them, make valid Settings: three NATS URLs, replicas 3, S3 storage."""
    ours = project_services(cluster_services())
    env = {k: str(v) for s in ours.values() for k, v in s.get("environment", {}).items()}
    for name in env:
        assert name.startswith("LAKEHOUSE_"), name
        model: Any = Settings
        for part in name.removeprefix("LAKEHOUSE_").lower().split("__"):
            assert part in model.model_fields, f"{name}: no setting {part!r}"
            model = model.model_fields[part].annotation
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():  # ${VAR:-default} -> default, ${VAR:?error} -> a value
        value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
        monkeypatch.setenv(key, re.sub(r"\$\{\w+:\?[^}]*\}", "set-by-the-operator", value))
    settings = load_settings(CLUSTER.parent / "no-such.toml")
    urls = settings.nats.url.split(",")
    assert {u.split("//")[1].split(":")[0] for u in urls} == set(NATS_NODES)
    assert settings.nats.replicas == 3
    assert settings.storage_url.startswith("s3://") and settings.storage.s3_endpoint


def test_gateways_on_all_interfaces_have_a_key_file_on_a_volume() -> None:
    """A gateway serving 0.0.0.0 without API keys refuses to start: each compose gateway reads
    its keys from a file on a named volume (`keys create` writes it there first)."""
    for svcs in (services(), cluster_services()):
        gateways = {n: s for n, s in project_services(svcs).items() if s["command"][0] == "gateway"}
        assert gateways
        for name, svc in gateways.items():
            assert flag(svc["command"], "--host") == "0.0.0.0"
            keys_file = svc["environment"]["LAKEHOUSE_AUTH__KEYS_FILE"]
            mounts = {m.split(":")[1] for m in svc.get("volumes", [])}
            assert str(Path(keys_file).parent) in mounts, f"{name}: {keys_file} not on a volume"
