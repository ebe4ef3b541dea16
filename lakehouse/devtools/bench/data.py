"""Clustered, embedding-like test vectors (never uniform random: those have no
neighbourhoods, so recall on them says nothing) and exact top-k by numpy."""

from __future__ import annotations

import numpy as np


def clustered(
    n: int,
    dim: int,
    *,
    centers: int = 200,
    noise: float = 0.35,
    rank: int = 16,
    seed: int = 7,
    sample: int = 0,
) -> np.ndarray:
    """Unit vectors shaped like embeddings: ``centers`` cluster directions, variation inside a
    cluster along a shared ``rank``-dimensional subspace, and a little isotropic noise. The
    clusters come from ``seed``; ``sample`` picks another draw from the same clusters (use it
    for queries)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(centers, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    sub = rng.normal(size=(rank, dim)).astype(np.float32) / np.sqrt(dim)
    rng = np.random.default_rng([seed, sample])
    which = rng.integers(0, centers, size=n)
    v = base[which] + (rng.normal(size=(n, rank)).astype(np.float32) * noise * 2) @ sub
    v += rng.normal(size=(n, dim)).astype(np.float32) * (0.1 * noise / np.sqrt(dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest rows by cosine distance."""
    sims = queries @ data.T
    return np.argsort(-sims, axis=1)[:, :k]


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    """Mean share of each query's true neighbours found. A truth row may be padded with -1
    where fewer than k exist (a filtered subset smaller than k)."""
    k = truth.shape[1]
    shares = []
    for f, t in zip(found, truth, strict=True):
        want = {int(x) for x in t if x >= 0}
        shares.append(len(set(f[:k]) & want) / max(1, len(want)))
    return float(np.mean(shares))
