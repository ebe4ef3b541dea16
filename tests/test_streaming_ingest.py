"""Streaming ingest: an upload larger than ``ingest.part_bytes`` is staged in parts and
converted while it arrives (``IngestRequest.source_parts``).

Through the gateway on both storage backends (rows exact, conversion seen before the upload
ended, nothing left in ``staging/``), failures while the body still arrives (a bad header
ends the upload early; over the cap after the job started), and a direct publisher whose
parts stop arriving (the job fails after ``ingest.upload_idle_timeout``) or whose ``end``
names parts it never stored."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from nats.aio.msg import Msg

from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from lakehouse.devtools.testing import Harness
from lakehouse.platform.storage import keys
from schemas import subjects as S
from schemas.ingest import IngestRequest, JobStatus
from tests.conftest import unique

PART = 64 << 10
STREAMING = {"ingest": {"part_bytes": PART, "max_upload_bytes": 16 << 20}}


def resumes(rows: int) -> bytes:
    """A CSV with multi-line quoted fields (and a quote inside one), ~100 bytes a row."""
    head = b"worker_id,name,resume\n"
    return head + b"".join(
        b'%d,Worker %d,"forklift, reach truck\nOSHA-30 ""certified"" %d"\n' % (i, i, i)
        for i in range(1, rows + 1)
    )


def staged(stack: Stack) -> list[str]:
    with stack.client() as c:
        listing = c.get("/v1/storage", params={"prefix": keys.STAGING}).json()
    return [o["key"] for o in listing["objects"]]


@pytest.mark.parametrize(
    "stack",
    [{"backend": b, "overrides": STREAMING, "shared": True} for b in ("file", "s3")],
    indirect=True,
    ids=["file", "s3"],
)
def test_a_large_upload_is_converted_while_it_arrives(stack: Stack) -> None:
    rows = 100_000
    ds, body = unique("stream"), resumes(rows)  # 7 MB: 108 parts
    half = len(body) // 2  # the converter needs 2 MiB (two pyarrow blocks) for its first rows
    converting = threading.Event()  # set once the job reports rows while half is unsent
    answer: list[Any] = []

    def chunks() -> Iterator[bytes]:
        for i in range(0, half, PART // 4):
            yield body[i : min(i + PART // 4, half)]
        converting.wait(60)  # the rest only after rows were converted (or the deadline)
        for i in range(half, len(body), PART // 4):
            yield body[i : i + PART // 4]

    def post() -> None:
        with stack.client(timeout=120) as c:
            answer.append(c.post(f"/v1/ingest?name={ds}", content=chunks()))

    sender = threading.Thread(target=post)
    sender.start()
    with stack.client() as c:

        def rows_converted() -> bool:
            jobs = c.get("/v1/jobs", params={"limit": 5}).json()["jobs"]
            return any(j["state"] == "running" and j["progress_rows"] for j in jobs)

        early = wait_until(rows_converted, timeout=60, interval=0.05, what="rows converted")
    converting.set()
    sender.join(120)
    assert early, "no rows were converted before the upload ended"
    [r] = answer
    assert r.status_code == 200, r.text
    assert r.json()["row_count"] == rows
    with stack.client() as c:
        q = "SELECT count(*), sum(worker_id), max(resume) FROM " + ds
        [[count, total, longest]] = c.post("/v1/sql", json={"sql": q}).json()["rows"]
    assert (count, total) == (rows, rows * (rows + 1) // 2)
    assert longest == 'forklift, reach truck\nOSHA-30 "certified" 99999'
    wait_until(lambda: staged(stack) == [], timeout=30, interval=0.1, what="staging emptied")


@pytest.mark.stack(overrides=STREAMING, backend="file", shared=True)
def test_a_multipart_upload_streams_too_and_small_ones_stay_one_object(stack: Stack) -> None:
    ds, body = unique("form"), resumes(10_000)
    with stack.client(timeout=120) as c:
        r = c.post(f"/v1/ingest?name={ds}", files={"file": ("w.csv", body, "text/csv")})
        assert r.status_code == 200, r.text
        assert r.json()["row_count"] == 10_000
        small = c.post(f"/v1/ingest?name={ds}_small", content=resumes(10))
        assert small.status_code == 200 and small.json()["row_count"] == 10
    wait_until(lambda: staged(stack) == [], timeout=30, interval=0.1, what="staging emptied")


@pytest.mark.stack(overrides=STREAMING, backend="file", shared=True)
def test_a_bad_header_ends_a_large_upload_early(stack: Stack) -> None:
    ds = unique("badhead")
    body = b"a,b,a\n" + b"1,2,3\n" * 500_000  # 3 MB: the job fails on part 0's header
    with stack.client(timeout=120) as c:
        r = c.post(f"/v1/ingest?name={ds}", content=body)
        assert r.status_code == 400, r.text
        assert "column 'a' appears twice" in r.json()["detail"]
        assert c.get(f"/v1/catalog/{ds}").status_code == 404
    wait_until(lambda: staged(stack) == [], timeout=30, interval=0.1, what="staging emptied")


@pytest.mark.stack(overrides={"ingest": {"part_bytes": PART, "max_upload_bytes": 4 << 20}})
def test_over_the_cap_after_the_job_started_is_413_and_the_job_fails(stack: Stack) -> None:
    ds, body = unique("cap"), resumes(60_000)  # 4,226,704 bytes: just over the 4 MiB cap

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to refuse up front
        for i in range(0, len(body), PART):
            yield body[i : i + PART]

    with stack.client(timeout=120) as c:
        r = c.post(f"/v1/ingest?name={ds}", content=chunks())
        assert r.status_code == 413, r.text
        jobs = c.get("/v1/jobs", params={"limit": 5}).json()["jobs"]

        def failed() -> dict[str, Any] | None:
            for j in c.get("/v1/jobs", params={"limit": 5}).json()["jobs"]:
                if j["state"] == "failed" and "upload failed" in j["error"]["detail"]:
                    return j
            return None

        job = wait_until(failed, timeout=30, interval=0.1, what="the job to fail")
        assert job is not None
        assert job["error"]["error"] == "upload failed", jobs
        assert "limit" in job["error"]["detail"]
        assert c.get(f"/v1/catalog/{ds}").status_code == 404
    wait_until(lambda: staged(stack) == [], timeout=30, interval=0.1, what="staging emptied")


async def test_a_direct_publisher_streams_parts_and_a_stalled_upload_fails(
    harness: Harness,
) -> None:
    """The contract without the gateway: parts published as they are written, then ``end``;
    and an upload whose parts stop: the job fails after the idle timeout, parts deleted."""

    def final(msg: Msg) -> bool:
        return JobStatus.model_validate_json(msg.data).done

    body = resumes(3000)

    async def begin(job: str) -> asyncio.Task[Msg]:
        """Part 0 stored, then the request published (as the gateway does); the job's end."""
        prefix = keys.staged_parts(job)
        await harness.storage.put_bytes(keys.upload_part(prefix, 0), body[:50_000])
        done = await harness.expect(S.job(job), final, timeout=30)
        request = IngestRequest(
            job_id=job, name=job, source_key=prefix, source_parts=True, delete_source=True
        )
        await harness.publish(S.INGEST_REQUESTS, request, msg_id=job)
        return done

    async with (
        harness.worker("catalog"),
        harness.worker("ingest", ingest={"upload_idle_timeout": 1.0}),
    ):
        done = await begin("streamed")
        prefix = keys.staged_parts("streamed")
        await harness.storage.put_bytes(keys.upload_part(prefix, 1), body[50_000:])
        await harness.storage.put_bytes(
            keys.upload_end(prefix), f'{{"parts": 2, "bytes": {len(body)}}}'.encode()
        )
        status = JobStatus.model_validate_json((await done).data)
        assert status.state == "succeeded", status.error
        assert status.result is not None and status.result.row_count == 3000

        status = JobStatus.model_validate_json((await (await begin("stalled"))).data)
        assert status.state == "failed" and status.error is not None
        assert status.error.error == "upload failed"
        assert "no part of the upload arrived for 1 s" in status.error.detail

        done = await begin("mismatch")  # its end names parts that were never stored
        end = f'{{"parts": 3, "bytes": {len(body)}}}'.encode()
        await harness.storage.put_bytes(keys.upload_end(keys.staged_parts("mismatch")), end)
        status = JobStatus.model_validate_json((await done).data)
        assert status.state == "failed" and status.error is not None
        assert "the upload's end does not match its parts: 1 parts of 50000" in status.error.detail
        deadline = asyncio.get_running_loop().time() + 10  # parts go after the status
        while (left := (await harness.storage.list(keys.STAGING)).objects) and (
            asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.05)
        assert left == []
