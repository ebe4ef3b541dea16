"""The document: FastStream's AsyncAPI 3 output for :data:`~schemas.asyncapi.declarations.broker`,
post-processed for what FastStream 0.7.8 leaves out (parameters, replies, binary payloads), built
once and cached."""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import inspect
import json
import re
from typing import Any

from faststream.specification import AsyncAPI
from pydantic import BaseModel

from schemas import subjects as S
from schemas.asyncapi.declarations import (
    DECLARED,
    DESCRIPTION,
    REPLY_PARTS,
    TITLE,
    Binary,
    broker,
)
from schemas.messages import STATUS_HEADER, ErrorBody

# ---- the document ------------------------------------------------------------------------

PARAMETERS: dict[str, dict[str, Any]] = {
    "dataset": {
        "description": "Dataset name, `[A-Za-z0-9_-]{1,128}` (also its SQL view name).",
        "examples": ["workers"],
    },
    "index": {
        "description": "Vector index name, `[A-Za-z0-9_-]{1,128}`.",
        "examples": ["workers"],
    },
    "partition": {
        "description": "Partition number, 0 to the index's `partitions` - 1: "
        "blake2b(id, digest_size=8) of an item id, read as a big-endian integer, mod "
        "`partitions`.",
        "examples": ["0"],
    },
    "job_id": {
        "description": "Job id: the ingest request's `job_id`, `[A-Za-z0-9_-]{1,64}`.",
        "examples": ["5b1e0c8a9f2d4c7e8a1b2c3d4e5f6a7b"],
    },
    "batch_id": {
        "description": "The EmbedRequest's `batch_id`.",
        "examples": ["5b1e0c8a9f2d4c7e8a1b2c3d4e5f6a7b-0"],
    },
    "kind": {
        "description": "Worker kind that gave up on the message.",
        "enum": list(S.WORKER_KINDS),
    },
}

PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _version() -> str:
    try:
        return importlib.metadata.version("lakehouse")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)}


def _add_schema(doc: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """Put ``model`` and its definitions into components/schemas; a reference to it."""
    schemas = doc["components"].setdefault("schemas", {})
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    for name, value in [*defs.items(), (model.__name__, schema)]:
        have = schemas.setdefault(name, value)
        if have != value:
            raise ValueError(f"two different schemas named {name!r} in the AsyncAPI document")
    return _ref("components", "schemas", model.__name__)


def _binary_message(form: Binary) -> dict[str, Any]:
    payload = form.payload or {"type": "string", "format": "binary"}
    message: dict[str, Any] = {
        "name": form.name,
        "title": form.name,
        "contentType": form.content_type,
        "description": form.description,
        "payload": payload,
    }
    if form.headers:
        message["headers"] = _headers(form.headers)
    return message


def _headers(headers: dict[str, Any]) -> dict[str, Any]:
    """A header schema: ``headers`` is one already, or a map of header name to schema."""
    if headers.get("type") == "object":
        return headers
    return {"type": "object", "properties": headers}


def _add_reply(
    doc: dict[str, Any], title: str, replies: tuple[type[BaseModel] | Binary, ...]
) -> None:
    """Give operation ``title`` an AsyncAPI 3 reply: channel ``<title>.reply`` (null address:
    the requester's inbox) with one message per reply form."""
    channel_name = f"{title}.reply"
    channel: dict[str, Any] = {
        "address": None,
        "description": f"Replies to `{doc['channels'][title]['address']}`, published on the "
        "reply subject (inbox) of the request.",
        "messages": {},
    }
    refs = []
    # The runtime's request/reply services answer errors with an ErrorBody and may split a
    # large reply into parts; the health ping is answered directly, in one message.
    served = ErrorBody in replies
    for reply in replies:
        if isinstance(reply, Binary):
            name, message = reply.name, _binary_message(reply)
        else:
            name = reply.__name__
            message = {
                "name": name,
                "title": name,
                "contentType": "application/json",
                "payload": _add_schema(doc, reply),
            }
            if reply.__doc__:
                message["description"] = inspect.cleandoc(reply.__doc__)
        if reply is ErrorBody:
            message["headers"] = {
                "type": "object",
                "required": [STATUS_HEADER],
                "properties": {
                    STATUS_HEADER: {
                        "type": "string",
                        "description": "HTTP status of the error.",
                        "examples": ["404"],
                    },
                    **REPLY_PARTS,
                },
            }
        elif served:
            message.setdefault("headers", {"type": "object", "properties": {}})
            message["headers"]["properties"].update(REPLY_PARTS)
        key = f"{channel_name}.{name}"
        doc["components"]["messages"][key] = message
        channel["messages"][name] = _ref("components", "messages", key)
        refs.append(_ref("channels", channel_name, "messages", name))
    doc["channels"][channel_name] = channel
    doc["operations"][title]["reply"] = {
        "channel": _ref("channels", channel_name),
        "messages": refs,
    }


def _refs(node: Any) -> set[str]:
    """Every ``$ref`` under ``node``."""
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _postprocess(doc: dict[str, Any]) -> dict[str, Any]:
    components = doc["components"]
    for message in components["messages"].values():
        message.pop("correlationId", None)  # a header our runtime never sets
        payload = message.get("payload", {}).get("$ref", "")
        if payload.startswith("#/components/schemas/") and not payload.endswith(":Payload"):
            message.setdefault("name", payload.rsplit("/", 1)[1])  # the model's name
    for title, channel in list(doc["channels"].items()):
        names = PARAM_RE.findall(channel.get("address") or "")
        if names:
            missing = [n for n in names if n not in PARAMETERS]
            if missing:
                raise ValueError(f"channel {title!r}: describe parameters {missing}")
            channel["parameters"] = {n: copy.deepcopy(PARAMETERS[n]) for n in names}
        declared = DECLARED.get(title)
        if declared is None:
            continue
        first = next(iter(channel["messages"].values()))  # the declaration's own message
        message_key = first["$ref"].rsplit("/", 1)[1]
        if declared.binary is not None:
            components["messages"][message_key] = _binary_message(declared.binary)
        if declared.headers:
            components["messages"][message_key]["headers"] = _headers(declared.headers)
        for form in declared.extra:
            key = f"{title}.{form.name}"
            components["messages"][key] = _binary_message(form)
            channel["messages"][form.name] = _ref("components", "messages", key)
            doc["operations"][title]["messages"].append(
                _ref("channels", title, "messages", form.name)
            )
        if declared.replies:
            _add_reply(doc, title, declared.replies)
    # Payload schemas FastStream made for the binary stubs are no longer referenced.
    schemas = components.get("schemas", {})
    used = _refs({k: v for k, v in doc.items() if k != "components"}) | _refs(
        components["messages"]
    )
    for name in [n for n in schemas if n.endswith(":Payload")]:
        if _ref("components", "schemas", name)["$ref"] not in used:
            del schemas[name]
    return doc


@functools.cache
def _build() -> str:
    spec = AsyncAPI(
        broker,
        title=TITLE,
        version=_version(),
        description=DESCRIPTION.strip(),
        schema_version="3.0.0",
    ).to_specification()
    doc = _postprocess(json.loads(spec.to_json()))
    # FastStream's order follows hashing: sort, so the file diffs cleanly between versions.
    for part in (doc, doc["components"]):
        for key in ("channels", "operations", "messages", "schemas"):
            if key in part:
                part[key] = dict(sorted(part[key].items()))
    return json.dumps(doc)


def document() -> dict[str, Any]:
    """The AsyncAPI 3 document (built once; each call returns a fresh copy)."""
    result: dict[str, Any] = json.loads(_build())
    return result
