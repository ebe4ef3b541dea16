"""The local provider's settings: device choice (CUDA when onnxruntime offers it, a clear error
when ``embed.device = "cuda"`` cannot be honoured), threads, max_tokens truncation, and the
embed worker's health reply naming its device. On CPU, through the code path a GPU takes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import onnxruntime as ort
import pytest
from pydantic import ValidationError

from lakehouse.devtools.bench.gpu_embed import TEMPLATE
from lakehouse.devtools.datagen import COLUMNS, iter_rows
from lakehouse.platform.config import load_settings
from lakehouse.platform.runtime import Runtime
from lakehouse.vectors.embedding import describe, load_provider
from lakehouse.vectors.embedding.local import (
    CPU,
    CUDA,
    DeviceUnavailable,
    LocalProvider,
    choose_providers,
    device_of,
)
from schemas.messages import HealthReply
from workers.embed import EmbedWorker

HAS_CUDA = CUDA in ort.get_available_providers()
no_cuda = pytest.mark.skipif(HAS_CUDA, reason="onnxruntime here offers CUDA")


@pytest.fixture(scope="module")
def cpu_provider() -> LocalProvider:
    return LocalProvider(None, device="cpu", max_tokens=128, threads=1)


def long_text() -> str:
    """Five rendered rows: ~700 tokens, every part of it different."""
    return " ".join(
        TEMPLATE.format_map(dict(zip(COLUMNS, r, strict=True))) for r in iter_rows(5, seed=3)
    )


def test_auto_puts_cuda_first_when_onnxruntime_offers_it() -> None:
    offered = ["TensorrtExecutionProvider", CUDA, CPU]
    assert choose_providers(offered, "auto") == [CUDA, CPU]
    assert choose_providers(offered, "cuda") == [CUDA, CPU]
    assert choose_providers(offered, "cpu") == [CPU]
    assert choose_providers([CPU], "auto") == [CPU]


def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(DeviceUnavailable, match=r"pip install '\.\[gpu\]'") as err:
        choose_providers(["AzureExecutionProvider", CPU], "cuda")
    assert "embed.device" in str(err.value) and CUDA in str(err.value)
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        choose_providers([CPU], "gpu")


def test_a_session_that_fell_back_to_the_cpu_is_an_error_only_when_cuda_was_required() -> None:
    assert device_of([CUDA, CPU], "auto") == "cuda"
    assert device_of([CPU], "auto") == "cpu"  # onnxruntime-gpu without the CUDA libraries
    with pytest.raises(DeviceUnavailable, match="cuDNN"):
        device_of([CPU], "cuda")


def test_the_real_provider_on_cpu_reports_cpu(cpu_provider: LocalProvider) -> None:
    assert cpu_provider.device == "cpu"
    assert cpu_provider.providers == [CPU]
    assert cpu_provider.threads == 1
    assert cpu_provider.session.get_session_options().intra_op_num_threads == 1
    assert describe(cpu_provider) == {
        "provider": "local",
        "model": "all-MiniLM-L6-v2",
        "device": "cpu",
        "max_tokens": 128,
        "threads": 1,
    }


@no_cuda
def test_settings_reach_the_provider_and_cuda_fails_at_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAKEHOUSE_EMBED__MAX_TOKENS", "64")
    monkeypatch.setenv("LAKEHOUSE_EMBED__THREADS", "1")
    settings = load_settings("/nonexistent.toml")
    provider = load_provider(settings)
    assert describe(provider) == {
        "provider": "local",
        "model": "all-MiniLM-L6-v2",
        "device": "cpu",  # auto, and this onnxruntime has no CUDA
        "max_tokens": 64,
        "threads": 1,
    }
    monkeypatch.setenv("LAKEHOUSE_EMBED__DEVICE", "cuda")
    with pytest.raises(DeviceUnavailable, match=r"pip install '\.\[gpu\]'"):
        load_provider(load_settings("/nonexistent.toml"))


@pytest.mark.parametrize(
    ("key", "value"),
    [("MAX_TOKENS", "8"), ("MAX_TOKENS", "1024"), ("THREADS", "-1"), ("DEVICE", "gpu")],
)
def test_out_of_range_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(f"LAKEHOUSE_EMBED__{key}", value)
    with pytest.raises(ValidationError):
        load_settings("/nonexistent.toml")


def test_defaults() -> None:
    embed = load_settings("/nonexistent.toml").embed
    assert (embed.max_tokens, embed.threads, embed.device) == (256, 0, "auto")


def test_max_tokens_truncates(cpu_provider: LocalProvider) -> None:
    words = " ".join(["forklift"] * 1000)
    assert len(cpu_provider.tokenizer.encode(words).ids) == 128
    text = long_text()
    longer = LocalProvider(None, device="cpu", max_tokens=256, threads=1)
    assert len(longer.tokenizer.encode(text).ids) == 256
    a, b = cpu_provider.embed([text])[0], longer.embed([text])[0]
    assert float(a @ b) < 0.999  # the second 128 tokens changed the vector
    short = "Forklift operator in Peoria, IL"  # under both limits: the same vector
    assert float(cpu_provider.embed([short])[0] @ longer.embed([short])[0]) > 0.9999


async def test_the_embed_workers_health_reply_names_its_device(
    cpu_provider: LocalProvider,
) -> None:
    rt = Runtime(load_settings("/nonexistent.toml"), EmbedWorker)
    worker = EmbedWorker(rt)
    worker.provider = cpu_provider
    rt.worker = worker
    sent: list[bytes] = []

    class Ping:
        reply = "_INBOX.health"

        async def respond(self, data: bytes) -> None:
            sent.append(data)

    await rt._on_health(cast(Any, Ping()))
    reply = HealthReply.model_validate_json(sent[0])
    assert reply.kind == "embed"
    assert reply.details["device"] == "cpu"
    assert reply.details["max_tokens"] == 128


def test_a_health_reply_without_details_still_parses() -> None:
    old = {"v": 1, "kind": "ingest", "instance": "ingest-1-abc", "pid": 1}
    reply = HealthReply.model_validate({**old, "started_at": datetime.now(UTC).isoformat()})
    assert reply.details == {}
