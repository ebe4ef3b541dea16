"""The code map holds: who may import whom, no import cycles, every package says what it is.

Imports are read from the source (``ast``), function-level imports included, so a lazy
import cannot hide a cycle or a forbidden dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.platform.procs import REPO_ROOT

TOP = ("lakehouse", "gateway", "workers", "schemas", "tests")

# Package -> the project packages its modules may import (besides their own package).
ALLOWED: dict[str, tuple[str, ...]] = {
    "schemas": (),
    "lakehouse.platform": ("schemas",),
    "lakehouse.tables": ("lakehouse.platform", "schemas"),
    "lakehouse.vectors": ("lakehouse.platform", "schemas"),
    "lakehouse.client": ("schemas",),
    "workers": ("lakehouse.platform", "lakehouse.tables", "lakehouse.vectors", "schemas"),
    "gateway": (
        "lakehouse.platform",
        "lakehouse.tables",
        "lakehouse.vectors",
        "lakehouse.client",  # the MCP server mounted at /mcp
        "schemas",
    ),
    "lakehouse.ops.cli": (
        "lakehouse.ops",
        "lakehouse.platform",
        "lakehouse.tables",
        "lakehouse.vectors",
        "lakehouse.devtools",  # the developer verbs: bench, gen-workers
        "lakehouse.client",  # the verbs for people: ingest, sql, search, datasets, jobs, mcp
        "gateway",
        "workers",
        "schemas",
    ),
    "lakehouse.ops": (
        "lakehouse.platform",
        "lakehouse.tables",
        "lakehouse.vectors",
        "schemas",
    ),
    "lakehouse.devtools": (
        "lakehouse",
        "gateway",
        "workers",
        "schemas",
    ),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    out = {}
    for top in TOP:
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            out[module_name(path)] = path
    return out


MODULES = project_modules()


def imports_of(name: str, path: Path) -> set[str]:
    """Project modules imported by ``name`` at run time (resolved to modules, not
    attributes); imports under ``if TYPE_CHECKING:`` only name types and are left out."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for child in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # annotations only: never executed
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def owner(name: str) -> str | None:
    """The most specific ALLOWED package containing module ``name``."""
    best = None
    for pkg in ALLOWED:
        if (name == pkg or name.startswith(pkg + ".")) and (best is None or len(pkg) > len(best)):
            best = pkg
    return best


def within(name: str, pkg: str) -> bool:
    return name == pkg or name.startswith(pkg + ".")


def test_every_core_module_belongs_to_a_role() -> None:
    loose = [m for m in MODULES if m.startswith("lakehouse.") and owner(m) is None]
    assert loose == [] or set(loose) <= {"lakehouse.__main__"}, loose


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_imports_follow_the_code_map(pkg: str) -> None:
    bad = []
    for name, deps in GRAPH.items():
        if owner(name) != pkg:
            continue
        for dep in deps:
            ok = (
                dep == "lakehouse"  # the top package holds only __version__
                or within(dep, pkg)
                or any(within(dep, a) for a in ALLOWED[pkg])
            )
            if not ok:
                bad.append(f"{name} imports {dep}")
    assert bad == []


def test_gateway_never_imports_workers() -> None:
    bad = [
        f"{n} imports {d}"
        for n, deps in GRAPH.items()
        if within(n, "gateway")
        for d in deps
        if within(d, "workers")
    ]
    assert bad == []


def test_nothing_outside_tests_imports_tests() -> None:
    bad = [
        f"{n} imports {d}"
        for n, deps in GRAPH.items()
        if not within(n, "tests")
        for d in deps
        if within(d, "tests")
    ]
    assert bad == []


def test_no_import_cycles() -> None:
    """A module never reaches itself through imports (package __init__ re-exports of a
    package's own submodules excepted: Python initialises the package first)."""
    edges = {
        n: {d for d in deps if not (n.startswith(d + ".") and MODULES[d].name == "__init__.py")}
        for n, deps in GRAPH.items()
    }
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(edges.get(n, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d) :], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    assert cycles == []


@pytest.mark.parametrize(
    "pkg",
    sorted(
        p for p, path in MODULES.items() if path.name == "__init__.py" and not within(p, "tests")
    ),
)
def test_every_package_opens_with_a_docstring(pkg: str) -> None:
    doc = ast.get_docstring(ast.parse(MODULES[pkg].read_text()))
    assert doc and len(doc.split()) >= 5, f"{pkg} needs a docstring saying what lives there"


@pytest.mark.parametrize("name", ["lakehouse.ops.cli.replay", "lakehouse.ops.cli.main"])
def test_cli_modules_import_on_their_own(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert out.returncode == 0, out.stderr


def test_readme_code_map_names_every_core_package() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    for pkg in ("platform", "tables", "vectors", "ops", "devtools"):
        assert f"{pkg}/" in section
