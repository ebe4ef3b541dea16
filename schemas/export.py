"""Export JSON Schema for every message model: ``python -m schemas.export DIR``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas import catalog, ingest, messages, query


def models() -> dict[str, type[BaseModel]]:
    """Every message model, by name."""
    found: dict[str, type[BaseModel]] = {}
    for module in (messages, catalog, ingest, query):
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
                if obj.__module__ == module.__name__ and name != "Message":
                    found[name] = obj
    return found


def json_schemas() -> dict[str, dict[str, object]]:
    return {name: model.model_json_schema() for name, model in models().items()}


def write_all(out: Path) -> list[Path]:
    """Write ``<Model>.json`` for every message model into ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = out / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    write_all(Path(argv[0] if argv else "schemas/json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
