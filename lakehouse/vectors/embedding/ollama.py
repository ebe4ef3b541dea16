"""Ollama provider: the official ``ollama`` client's ``embed`` (``/api/embed``, batch input)
against ``embed.ollama_host``; default model nomic-embed-text (768-d)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lakehouse.platform.errors import BadRequest, RetryLater
from lakehouse.vectors.embedding import normalize

if TYPE_CHECKING:
    from lakehouse.platform.config import Settings


class OllamaProvider:
    name = "ollama"

    def __init__(self, settings: Settings) -> None:
        import ollama

        self.model = settings.embed.ollama_model
        self.dim = settings.embed.ollama_dim
        self.client = ollama.Client(host=settings.embed.ollama_host, timeout=settings.embed.timeout)
        self.host = settings.embed.ollama_host

    def embed(self, texts: list[str]) -> np.ndarray:
        import httpx
        import ollama

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            resp = self.client.embed(model=self.model, input=texts)
        except (httpx.HTTPError, ConnectionError) as exc:
            raise RetryLater(f"Ollama at {self.host} unreachable: {type(exc).__name__}") from None
        except ollama.ResponseError as exc:
            if exc.status_code >= 500:
                raise RetryLater(f"Ollama error {exc.status_code}: {exc.error}") from None
            raise BadRequest(f"Ollama refused the request: {exc.error}") from None
        vectors = np.asarray(resp.embeddings, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise BadRequest(
                f"model {self.model!r} returned {vectors.shape[-1]}-d vectors; "
                f"embed.ollama_dim is {self.dim}"
            )
        return normalize(vectors)
