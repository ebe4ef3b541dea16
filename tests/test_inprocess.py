"""Worker handlers in the test's own event loop (``harness`` fixture, lakehouse.devtools.testing):
a real nats-server and the runtime's own consume/serve code, no gateway and no worker
processes, a few seconds per test."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq
import pytest
from nats.aio.msg import Msg

from lakehouse.devtools.testing import Harness, inline_payload
from lakehouse.platform.errors import LakehouseError
from schemas import subjects as S
from schemas.catalog import (
    ColumnSpec,
    DeleteReply,
    History,
    Manifest,
    NameRequest,
    ObjectRef,
    RegisterReply,
    RegisterRequest,
)
from schemas.ingest import IngestRequest, JobStatus
from schemas.query import SqlRequest
from schemas.vectors import EmbedText


def register(name: str, request_id: str, fp: str = "fp1", rows: int = 2) -> RegisterRequest:
    return RegisterRequest(
        request_id=request_id,
        name=name,
        schema_fingerprint=fp,
        columns=[ColumnSpec(name="id", type="int64" if fp == "fp1" else "string", nullable=False)],
        objects=[ObjectRef(key=f"datasets/{name}/{fp}/{request_id}.parquet", size=1, rows=rows)],
    )


async def test_catalog_register_and_history_over_request_reply(harness: Harness) -> None:
    async with harness.worker("catalog"):
        first = RegisterReply.model_validate_json(
            await harness.request(S.CATALOG_REGISTER, register("people", "r1"))
        )
        second = RegisterReply.model_validate_json(
            await harness.request(S.CATALOG_REGISTER, register("people", "r2", rows=5))
        )
        again = RegisterReply.model_validate_json(  # a redelivered request changes nothing
            await harness.request(S.CATALOG_REGISTER, register("people", "r2", rows=5))
        )
        with pytest.raises(LakehouseError) as conflict:
            await harness.request(S.CATALOG_REGISTER, register("people", "r3", fp="other"))
        history = History.model_validate_json(
            await harness.request(S.CATALOG_HISTORY, NameRequest(name="people"))
        )
        current = Manifest.model_validate_json(
            await harness.request(S.CATALOG_GET, NameRequest(name="people"))
        )
        with pytest.raises(LakehouseError) as missing:
            await harness.request(S.CATALOG_HISTORY, NameRequest(name="nobody"))
    assert (first.existing, first.manifest.revision) == (False, 1)
    assert (second.existing, second.manifest.revision, second.manifest.row_count) == (True, 2, 5)
    assert again == second
    assert conflict.value.status == 409 and "fingerprint" in str(conflict.value.detail)
    assert [(e.seq, e.revision, e.type) for e in history.events] == [
        (first.catalog_seq, 1, "registered"),
        (second.catalog_seq, 2, "registered"),
    ]
    assert history.events[1].replaced_objects == first.manifest.objects
    assert current == second.manifest
    assert missing.value.status == 404


async def ingest(harness: Harness, job: str, name: str, csv: bytes, **kw: Any) -> JobStatus:
    """Stage ``csv``, publish an IngestRequest as the gateway does, and wait for the job's
    final status on lakehouse.jobs.<job>."""
    key = f"staging/{job}.csv"
    await harness.storage.put_bytes(key, csv)

    def final(msg: Msg) -> bool:
        return JobStatus.model_validate_json(msg.data).done

    done = await harness.expect(S.job(job), final)
    await harness.publish(
        S.INGEST_REQUESTS,
        IngestRequest(job_id=job, name=name, source_key=key, **kw),
        msg_id=job,
    )
    return JobStatus.model_validate_json((await done).data)


async def test_ingest_turns_a_staged_csv_into_a_registered_dataset(harness: Harness) -> None:
    async with harness.worker("catalog"), harness.worker("ingest"):
        status = await ingest(harness, "j1", "people", b"id,name\n1,Alice\n2,Bob\n")
        assert status.state == "succeeded", status.error
        assert status.result is not None
        manifest = Manifest.model_validate_json(
            await harness.request(S.CATALOG_GET, NameRequest(name="people"))
        )
    assert (status.result.row_count, status.result.revision) == (2, 1)
    assert [(c.name, c.type) for c in manifest.columns] == [("id", "int64"), ("name", "string")]
    assert [o.key for o in manifest.objects] == [status.result.key]
    path = harness.storage.local_path(status.result.key)
    assert path is not None
    assert pq.read_table(path).to_pylist() == [
        {"id": 1, "name": "Alice"},
        {"id": 2, "name": "Bob"},
    ]
    assert await harness.dead_letters("ingest") == []


async def test_a_missing_csv_fails_the_job_and_is_dead_lettered(harness: Harness) -> None:
    request = IngestRequest(job_id="lost", name="lost", source_key="staging/none.csv")
    await harness.publish(S.INGEST_REQUESTS, request, msg_id="lost")
    rt = await harness.drain("ingest")  # burst mode: until nothing is pending
    assert dict(rt.outcomes) == {"dead-lettered": 1}
    last = await harness.js.get_last_msg(S.STREAM_JOBS, S.job("lost"))
    status = JobStatus.model_validate_json(last.data or b"")
    assert status.state == "failed"
    assert status.error is not None and status.error.status == 404
    [letter] = await harness.dead_letters("ingest")
    assert letter.permanent and letter.deliveries == 1
    assert letter.error == "no CSV at storage key 'staging/none.csv'"
    assert IngestRequest.model_validate_json(inline_payload(letter)) == request


async def sql(harness: Harness, query: str, after: int) -> list[list[object]]:
    """Rows of ``query`` once the query worker has applied catalog sequence ``after``."""
    raw = await harness.request(S.QUERY_SQL, SqlRequest(sql=query, min_catalog_seq=after))
    return json.loads(raw)["rows"]  # type: ignore[no-any-return]


async def test_query_views_follow_catalog_events(harness: Harness) -> None:
    async with harness.worker("catalog"), harness.worker("ingest"), harness.worker("query"):
        v1 = await ingest(harness, "a", "teams", b"id,team\n1,red\n2,blue\n")
        assert v1.result is not None
        q = "SELECT team FROM teams ORDER BY id"
        assert await sql(harness, q, v1.result.catalog_seq) == [["red"], ["blue"]]
        v2 = await ingest(harness, "b", "teams", b"id,team\n3,green\n")
        assert v2.result is not None and v2.result.revision == 2
        assert await sql(harness, q, v2.result.catalog_seq) == [["green"]]
        deleted = DeleteReply.model_validate_json(
            await harness.request(S.CATALOG_DELETE, NameRequest(name="teams"))
        )
        with pytest.raises(LakehouseError) as gone:
            await sql(harness, q, deleted.catalog_seq)
    assert gone.value.status == 400 and "teams" in str(gone.value.detail)


async def test_text_search_uses_the_cache(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness.worker("embed", embed={"cache_size": 2}) as rt:
        provider = rt.worker.provider  # type: ignore[attr-defined]
        calls: list[list[str]] = []
        embed = provider.embed

        def counted(texts: list[str]) -> Any:
            calls.append(list(texts))
            return embed(texts)

        monkeypatch.setattr(provider, "embed", counted)

        async def vectors(*texts: str) -> list[list[float]]:
            raw = await harness.request(S.EMBED_TEXT, EmbedText(texts=list(texts)))
            return json.loads(raw)["vectors"]  # type: ignore[no-any-return]

        [first] = await vectors("cache me")
        assert await vectors("cache me") == [first]  # answered from the cache
        assert calls == [["cache me"]]
        both = await vectors("cache me", "new text")  # only the new text goes to the model
        assert both[0] == first and calls == [["cache me"], ["new text"]]
        await vectors("third")  # over cache_size: the least recently used ("cache me") goes
        await vectors("cache me")
        assert calls == [["cache me"], ["new text"], ["third"], ["cache me"]]
        # More distinct texts than the cache holds: every vector still comes back, in order.
        many = await vectors("a", "b", "c", "a")
        assert len(many) == 4 and many[0] == many[3]
        assert calls[-1] == ["a", "b", "c"] and len(rt.worker.cache) == 2  # type: ignore[attr-defined]
