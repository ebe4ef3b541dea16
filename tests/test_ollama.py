"""The ollama provider against a small local HTTP server speaking Ollama's /api/embed
(no Ollama server exists here), and what happens when Ollama is unreachable."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nats
import numpy as np
import pytest

from lakehouse.devtools.servers import wait_until
from lakehouse.devtools.stack import Stack
from lakehouse.platform.procs import free_port
from schemas import subjects as S
from schemas.messages import DeadLetter

pytestmark = pytest.mark.slow

DIM = 8


def fake_vector(text: str) -> list[float]:
    rng = np.random.default_rng(abs(hash(text.lower().split()[0])) % (2**32))
    return rng.normal(size=DIM).tolist()


class FakeOllama(BaseHTTPRequestHandler):
    calls: list[dict] = []  # type: ignore[type-arg]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        FakeOllama.calls.append(body)
        if self.path != "/api/embed":
            self.send_response(404)
            self.end_headers()
            return
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        out = json.dumps({"model": body["model"], "embeddings": [fake_vector(t) for t in texts]})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ollama() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOllama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def embed_settings(host: str) -> dict[str, object]:
    return {"provider": "ollama", "ollama_host": host, "ollama_dim": DIM, "timeout": 5.0}


def test_ollama_provider_embeds_through_api_embed(
    ollama: str, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(("embed", "vectors"), overrides={"embed": embed_settings(ollama)})
    with stack.client() as c:
        r = c.post("/v1/embed", json={"texts": ["forklift driver", "welder"]})
        assert r.status_code == 200, r.text
        assert r.json()["dim"] == DIM and r.json()["model"] == "nomic-embed-text"
        call = FakeOllama.calls[-1]
        # One call with both texts (the worker sends a batch shortest first).
        assert (call["model"], sorted(call["input"])) == (
            "nomic-embed-text",
            ["forklift driver", "welder"],
        )
        assert c.post("/v1/vectors/indexes", json={"name": "o", "dim": DIM}).status_code == 201
        items = [{"id": "a", "text": "forklift operator"}, {"id": "b", "text": "welder"}]
        assert c.post("/v1/vectors/indexes/o/items", json={"items": items}).status_code == 202
        wait_until(lambda: c.get("/v1/vectors/indexes/o").json()["count"] == 2, what="added")
        hits = c.post("/v1/vectors/indexes/o/search", json={"text": "welder pipe", "k": 1}).json()
        assert hits["hits"][0]["id"] == "b"


def test_unreachable_ollama_is_503_and_dead_letters_after_retries(
    make_stack: Callable[..., Stack],
) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    stack = make_stack(("embed", "vectors"), overrides={"embed": embed_settings(host)})
    with stack.client() as c:
        r = c.post("/v1/embed", json={"texts": ["anything"]})
        assert r.status_code == 503 and "unreachable" in r.json()["detail"]
        assert c.post("/v1/vectors/indexes", json={"name": "o", "dim": DIM}).status_code == 201
        items = [{"id": "a", "text": "never embedded"}]
        assert c.post("/v1/vectors/indexes/o/items", json={"items": items}).status_code == 202

    async def letters() -> list[DeadLetter]:
        nc = await nats.connect(stack.nats.url)
        try:
            msg = await nc.jetstream().get_last_msg(S.STREAM_DLQ, S.dlq("embed"))
        except Exception:
            return []
        finally:
            await nc.close()
        return [DeadLetter.model_validate_json(msg.data or b"{}")]

    found = wait_until(lambda: asyncio.run(letters()), timeout=60, what="dead letter")
    assert found[0].deliveries == 5 and "unreachable" in found[0].error
    assert json.loads(base64.b64decode(found[0].payload_b64 or ""))["items"][0]["id"] == "a"
