"""Export the contract: ``python -m schemas.export DIR`` (or ``lakehouse schemas DIR``) writes
the JSON Schema of every pydantic model of every module of ``schemas/`` and the AsyncAPI 3
document of the NATS subjects (``asyncapi.json``)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

import schemas
from schemas.asyncapi import document


def modules() -> list[ModuleType]:
    """Every module of the ``schemas`` package, discovered (nothing to keep in sync)."""
    return [
        importlib.import_module(f"{schemas.__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(schemas.__path__), key=lambda i: i.name)
        if not info.ispkg
    ]


def models() -> dict[str, type[BaseModel]]:
    """Every pydantic model defined in a module of ``schemas/``, by name (names are unique:
    each becomes ``<Name>.json``)."""
    found: dict[str, type[BaseModel]] = {}
    for module in modules():
        for name, obj in vars(module).items():
            if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
                continue
            if obj.__module__ != module.__name__:
                continue  # imported, not defined here
            if obj.__pydantic_generic_metadata__["origin"] is not None:
                continue  # e.g. RootModel[list[X]], which pydantic puts in the module
            if name in found and found[name] is not obj:
                raise ValueError(f"two models named {name!r} in schemas/: rename one")
            found[name] = obj
    return found


def json_schemas() -> dict[str, dict[str, object]]:
    return {name: model.model_json_schema() for name, model in models().items()}


def write_all(out: Path) -> list[Path]:
    """Write ``<Model>.json`` for every model and ``asyncapi.json`` into ``out``; the paths
    written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = out / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    path = out / "asyncapi.json"
    path.write_text(json.dumps(document(), indent=2) + "\n")
    written.append(path)
    return written


def main(argv: list[str]) -> int:
    write_all(Path(argv[0] if argv else "schemas/json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
