"""`lakehouse dlq list|show|retry|purge` on real NATS: an ingest that failed for a missing CSV
is retried after the CSV is put in place."""

from __future__ import annotations

import asyncio
import json

import httpx
import nats
import pytest

from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack

pytestmark = pytest.mark.slow


def publish(stack: Stack, job: str, key: str) -> None:
    async def go() -> None:
        nc = await nats.connect(stack.nats.url)
        body = {"job_id": job, "name": f"ds_{job}", "source_key": key}
        await nc.jetstream().publish(
            "lakehouse.ingest.requests", json.dumps(body).encode(), headers={"Nats-Msg-Id": job}
        )
        await nc.close()

    asyncio.run(go())


def test_dead_letters_can_be_listed_shown_retried_and_purged(stack: Stack) -> None:
    publish(stack, "late", "uploads/late.csv")  # the CSV is not there yet
    publish(stack, "never", "uploads/never.csv")
    wait_until(
        lambda: "2 dead letter(s)" in stack.cli("dlq", "list", "ingest"), what="two dead letters"
    )
    listing = stack.cli("dlq", "list", "ingest")
    assert "no CSV at storage key 'uploads/late.csv'" in listing
    seq = next(line.split("\t")[0] for line in listing.splitlines() if "late.csv" in line)
    shown = stack.cli("dlq", "show", "ingest", seq)
    assert '"permanent": true' in shown and '"job_id": "late"' in shown
    with httpx.Client(base_url=stack.base) as c:
        c.put("/v1/storage/uploads/late.csv", content=b"id,name\n1,Alice\n")  # the fix
        assert "re-published 1 message(s)" in stack.cli("dlq", "retry", "ingest", seq)

        def registered() -> bool:
            r = c.post("/v1/sql", json={"sql": "SELECT name FROM ds_late"})
            return r.status_code == 200 and r.json()["rows"] == [["Alice"]]

        wait_until(registered, timeout=30, what="retried ingest to register")
    assert "1 dead letter(s)" in stack.cli("dlq", "list", "ingest")
    assert "purged 1 dead letter(s)" in stack.cli("dlq", "purge", "ingest")
    assert "0 dead letter(s)" in stack.cli("dlq", "list", "ingest")
