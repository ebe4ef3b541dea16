"""The crash matrix, part two: vector loads, embedding and the gateway (part one, ingest and
the catalog, is ``test_crash_matrix.py``, whose helpers these rows share). Split in two files
so that ``make test``'s two pytest processes each take a part."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from tests.test_crash_matrix import (
    Gate,
    create_index,
    expect_vectors,
    index_count,
    load_in_background,
    make_stack,
    no_orphans,
    record,
    sizes,
    verify,
)

pytestmark = pytest.mark.slow


# ---- vectors ------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["mid-batch", "mid-snapshot", "no-snapshots", "nats-restart"])
def test_vector_load_faults(tmp_path: Path, full: bool, rng: random.Random, fault: str) -> None:
    n = sizes(full)["vectors"]
    kinds: tuple[str, ...] = () if fault == "mid-snapshot" else ("vectors",)
    # mid-snapshot: snapshot as soon as a partition has 2,000 changes (a few batches in).
    snap = {"vectors": {"snapshot_every": 0.0}} if fault == "mid-snapshot" else {}
    stack = make_stack(tmp_path, kinds, overrides=snap)
    try:
        if fault == "mid-snapshot":
            env = {"LAKEHOUSE_FAULTS": json.dumps({"vectors.mid_snapshot": "kill"})}
            faulty = stack.spawn("vectors", "worker", "vectors", env=env)
            wait_until(lambda: stack.healthy({"vectors": 1}), timeout=30, interval=0.1)
        create_index(stack, "crash")
        gate = (
            Gate(int(n * rng.uniform(0.2, 0.6))) if fault in ("mid-batch", "nats-restart") else None
        )
        loader = load_in_background(stack, "crash", n, gate)
        if fault == "mid-snapshot":
            faulty.wait(120)  # killed by its first snapshot
            assert faulty.returncode == -signal.SIGKILL
            stack.procs.pop("vectors")
        elif gate is not None:
            assert gate.reached.wait(120)
            assert index_count(stack, "crash") < n  # the fault lands mid-load
        began = time.monotonic()
        if fault == "mid-batch":
            stack.kill("vectors")
            stack.spawn("vectors", "worker", "vectors")
            gate.release.set()
        elif fault == "mid-snapshot":
            stack.spawn("vectors", "worker", "vectors")
        elif fault == "nats-restart":
            stack.nats.stop()
            gate.release.set()  # the loader now publishes into the outage and retries
            stack.nats.start()
        loader.join()
        if fault == "no-snapshots":
            wait_until(lambda: index_count(stack, "crash") == n, timeout=300, interval=0.2)
            stack.kill("vectors")
            for obj in (stack.settings.data_dir / "objects" / "_vectors").rglob("*"):
                if obj.is_file():
                    obj.unlink()
            began = time.monotonic()
            stack.spawn("vectors", "worker", "vectors")
        wait_until(lambda: index_count(stack, "crash") == n, timeout=300, interval=0.1)
        took = time.monotonic() - began
        verify(stack, tmp_path, expect_vectors("crash", [f"v{i}" for i in range(n)]))
        assert stack.healthy({"vectors": 1})
        record(f"{n} vectors: {fault}", took, f"{n} ids exact (count + digest)")
    finally:
        stack.stop()


# ---- embed --------------------------------------------------------------------------
def texts(n: int) -> list[dict[str, str]]:
    roles = ["forklift driver", "welder", "electrician", "CNC machinist", "picker", "loader"]
    return [
        {"id": f"t{i}", "text": f"{roles[i % len(roles)]} {i} with OSHA-{10 + i % 21} in IL"}
        for i in range(n)
    ]


def add_texts(stack: Stack, name: str, items: list[dict[str, str]]) -> None:
    with stack.client() as c:
        for s in range(0, len(items), 100):
            r = c.post(f"/v1/vectors/indexes/{name}/items", json={"items": items[s : s + 100]})
            assert r.status_code in (200, 202), r.text


@pytest.mark.parametrize("fault", ["kill-embed", "model-fails-some"])
def test_embed_faults(tmp_path: Path, full: bool, rng: random.Random, fault: str) -> None:
    n = sizes(full)["texts"]
    stack = make_stack(tmp_path, ("vectors",))
    try:
        env = {}
        if fault == "model-fails-some":
            env = {"LAKEHOUSE_FAULTS": json.dumps({"embed.fail_on": "POISON"})}
        stack.spawn("embed", "worker", "embed", env=env)
        wait_until(lambda: stack.healthy({"embed": 1}), timeout=60, interval=0.1)
        create_index(stack, "texts", dim=384)
        items = texts(n)
        poisoned = set(rng.sample(range(n), max(1, n // 100))) if fault != "kill-embed" else set()
        for i in poisoned:
            items[i]["text"] += " POISON"
        # kill-embed: only the first part is queued before the kill, so it lands mid-embed.
        at = int(n * rng.uniform(0.2, 0.6)) if fault == "kill-embed" else n
        add_texts(stack, "texts", items[:at])
        began = time.monotonic()
        if fault == "kill-embed":
            wait_until(lambda: index_count(stack, "texts") > 0, timeout=120, interval=0.05)
            assert index_count(stack, "texts") < n  # the kill lands mid-embed
            stack.kill("embed")
            began = time.monotonic()
            stack.spawn("embed", "worker", "embed")
            add_texts(stack, "texts", items[at:])
        want = [it["id"] for i, it in enumerate(items) if i not in poisoned]
        wait_until(lambda: index_count(stack, "texts") == len(want), timeout=300, interval=0.1)
        took = time.monotonic() - began
        verify(stack, tmp_path, expect_vectors("texts", want))
        checked = f"{len(want)} ids exact"
        if poisoned:
            letters = stack.cli("dlq", "list", "embed")
            assert "cannot embed this input" in letters, letters
            dead: set[str] = set()
            for line in letters.splitlines()[:-1]:
                seq = line.split("\t", 1)[0]
                payload = stack.cli("dlq", "show", "embed", seq).split("payload:", 1)[1]
                dead |= {it["id"] for it in json.loads(payload)["items"]}
            assert dead == {f"t{i}" for i in poisoned}
            checked += f"; {len(poisoned)} poisoned in the DLQ with the reason"
        assert stack.healthy({"embed": 1, "vectors": 1})
        record(f"embed {n} texts: {fault}", took, checked)
    finally:
        stack.stop()


# ---- gateway ------------------------------------------------------------------------
def test_gateway_sigterm_during_streamed_upload(tmp_path: Path) -> None:
    stack = make_stack(
        tmp_path, ("catalog", "ingest", "query"), overrides={"gateway": {"shutdown_timeout": 1}}
    )
    try:
        started, resume = threading.Event(), threading.Event()
        outcome: dict[str, Any] = {}

        def body() -> Iterator[bytes]:
            yield b"worker_id,name\n"
            for chunk in range(64):
                if chunk == 4:
                    started.set()
                    resume.wait(30)
                yield b"".join(
                    b"%d,w%d\n" % (i, i) for i in range(chunk * 20000, (chunk + 1) * 20000)
                )

        def upload() -> None:
            try:
                r = httpx.post(f"{stack.base}/v1/ingest?name=cut", content=body(), timeout=60)
                outcome["status"] = r.status_code
            except httpx.HTTPError as exc:
                outcome["error"] = type(exc).__name__

        client = threading.Thread(target=upload)
        client.start()
        assert started.wait(30)
        gateway = stack.procs["gateway"][0]
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
        resume.set()
        client.join(60)
        assert outcome.get("status", 500) >= 500 or "error" in outcome, outcome
        stack.procs.pop("gateway")
        began = time.monotonic()
        stack.spawn("gateway", "gateway")
        wait_until(stack.healthy, timeout=30, interval=0.1)
        took = time.monotonic() - began
        assert httpx.get(f"{stack.base}/v1/catalog/cut").status_code == 404
        objects = stack.settings.data_dir / "objects"
        leftovers = [*objects.glob("staging/*"), *objects.glob(".lakehouse-tmp/*")]
        assert leftovers == []  # before any gc: the cut upload left nothing behind
        no_orphans(stack)
        record("gateway: SIGTERM during a streamed upload", took, f"client got {outcome}")
    finally:
        stack.stop()
