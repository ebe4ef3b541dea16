"""Index definitions on ``LAKEHOUSE_INDEXES`` (create, get, list) and the id digest that
replay and verify compare per partition."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from lakehouse.platform.bus import StaleSequence, publish_expecting
from lakehouse.platform.errors import Conflict
from schemas import subjects as S
from schemas.vectors import IndexSpec


async def get_index(js: JetStreamContext, name: str) -> IndexSpec | None:
    try:
        msg = await js.get_last_msg(S.STREAM_INDEXES, S.index_def(name))
    except NotFoundError:
        return None
    spec = IndexSpec.model_validate_json(msg.data or b"{}")
    return None if spec.deleted else spec


async def list_indexes(js: JetStreamContext) -> list[IndexSpec]:
    info = await js.stream_info(S.STREAM_INDEXES, subjects_filter=S.all_under(S.INDEXES_PREFIX))
    out = []
    for subject in sorted(info.state.subjects or {}):
        spec = await get_index(js, subject[len(S.INDEXES_PREFIX) + 1 :])
        if spec is not None:
            out.append(spec)
    return out


async def create_index(js: JetStreamContext, spec: IndexSpec) -> IndexSpec:
    """Publish a new index definition; Conflict when a live index has that name (also when a
    concurrent create wins the race)."""
    try:
        last = await js.get_last_msg(S.STREAM_INDEXES, S.index_def(spec.name))
    except NotFoundError:
        expected = 0
    else:
        if not IndexSpec.model_validate_json(last.data or b"{}").deleted:
            raise Conflict(f"index {spec.name!r} already exists")
        expected = last.seq or 0
    if spec.created_at is None:
        spec = spec.model_copy(update={"created_at": datetime.now(UTC)})
    try:
        await publish_expecting(
            js, S.index_def(spec.name), spec.model_dump_json().encode(), expected
        )
    except StaleSequence:
        raise Conflict(f"index {spec.name!r} already exists") from None
    return spec


def ids_digest(ids: list[str]) -> str:
    """Order-free digest of an id set (what ``verify`` compares per partition)."""
    h = hashlib.sha256()
    for item in sorted(ids):
        h.update(item.encode())
        h.update(b"\n")
    return h.hexdigest()
