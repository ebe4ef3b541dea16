"""Test vectors: the benchmark's clustered, embedding-like generator (see lakehouse.bench.data)."""

from lakehouse.bench.data import clustered, exact_topk, recall

__all__ = ["clustered", "exact_topk", "recall"]
