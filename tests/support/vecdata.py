"""Clustered, embedding-like test vectors (never uniform random: those have no
neighbourhoods, so recall on them says nothing) and exact top-k by numpy."""

from __future__ import annotations

import numpy as np


def clustered(
    n: int, dim: int, *, centers: int = 200, noise: float = 0.35, seed: int = 7
) -> np.ndarray:
    """Unit vectors around ``centers`` random directions (low-rank structure + noise)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(centers, dim)).astype(np.float32)
    which = rng.integers(0, centers, size=n)
    v = basis[which] + noise * rng.normal(size=(n, dim)).astype(np.float32) * np.sqrt(dim / dim)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest rows by cosine distance."""
    sims = queries @ data.T
    return np.argsort(-sims, axis=1)[:, :k]


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth, strict=True)]))
