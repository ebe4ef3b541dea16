"""Embedding providers. A provider turns texts into L2-normalized float32 vectors.

Adding a provider touches one file: write a module here with a class that has ``name``,
``model``, ``dim`` and ``embed(texts) -> np.ndarray``, and add it to :data:`PROVIDERS`. A
provider that runs a model in this process also has ``device`` ("cuda" or "cpu"), and may have
``max_tokens`` and ``threads``: :func:`describe` reports them (the embed worker's health).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from lakehouse.platform.config import Settings

PROVIDERS = {
    "local": "lakehouse.vectors.embedding.local:LocalProvider",
    "ollama": "lakehouse.vectors.embedding.ollama:OllamaProvider",
}


class Provider(Protocol):
    name: str
    model: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalized. Blocking; call from a thread."""
        ...


def load_provider(settings: Settings) -> Provider:
    target = PROVIDERS.get(settings.embed.provider)
    if target is None:
        known = ", ".join(sorted(PROVIDERS))
        raise ValueError(f"unknown embed provider {settings.embed.provider!r} (known: {known})")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    provider: Provider = cls(settings)
    return provider


def describe(provider: Provider) -> dict[str, str | int]:
    """Provider, model and the optional ``device``, ``max_tokens`` and ``threads`` of
    ``provider``: what an embed worker reports in its health reply."""
    out: dict[str, str | int] = {"provider": provider.name, "model": provider.model}
    for key in ("device", "max_tokens", "threads"):
        value = getattr(provider, key, None)
        if isinstance(value, str | int):
            out[key] = value
    return out


def normalize(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (v / norms).astype(np.float32, copy=False)


def model_dim(settings: Settings) -> int:
    """Dimension of the configured provider's vectors, without loading the model."""
    return settings.embed.ollama_dim if settings.embed.provider == "ollama" else 384
