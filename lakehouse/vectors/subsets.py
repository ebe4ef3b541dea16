"""Filtered search over the partitions of one index that a worker owns, in one pass: every
partition bounds its matches with the int8 mirror, then the float re-rank is shared, so about
k vectors are read back from hnswlib in all rather than k per partition."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from lakehouse.vectors.partition import Hits, Partition


def search_subsets(
    parts: list[Partition],
    query: np.ndarray,
    ids: Callable[[Partition], Iterable[str]],
    k: int,
    *,
    key: str | None = None,
    exact_max: int = 20_000,
    ef: int | None = None,
    each: Callable[[Callable[[Partition], Any], list[Partition]], Iterable[Any]] = map,
) -> list[tuple[Hits, float]]:
    """Filtered top-k over several partitions of one index at once (a worker's share): each
    partition bounds its matches with int8 scores, then only the matches whose lower bound
    reaches below the k-th smallest upper bound *across the partitions* are read back in
    float: about k vectors in all instead of k per partition. The union of the answers holds
    the exact top-k of the matches. Partitions without the mirror, or with more than
    ``exact_max`` matches, are searched on their own (:meth:`Partition.search_subset`).
    ``each`` runs the first step over the partitions (``map``, or a thread pool's ``map``:
    the int8 scoring releases the GIL). Returns (hits, milliseconds) per partition."""
    q = parts[0].prepare(query.reshape(1, -1))[0] if parts else query
    Bounds = tuple[np.ndarray, np.ndarray, np.ndarray]

    def first(part: Partition) -> tuple[Hits, Bounds | None, float]:
        started = time.perf_counter()
        if part.int8 is not None:
            with part.lock.read():
                labels = part.labels_cached(functools.partial(ids, part), key)
                if labels.size == 0:
                    return [], None, (time.perf_counter() - started) * 1000
                if labels.size <= exact_max:
                    found = part.int8.bounds(q, labels, min(k, labels.size), part.spec.metric)
                    return [], found, (time.perf_counter() - started) * 1000
        hits = part.search_subset(query, ids(part), k, key=key, exact_max=exact_max, ef=ef)
        return hits, None, (time.perf_counter() - started) * 1000

    firsts = list(each(first, parts))
    out: list[tuple[Hits, float]] = [(hits, ms) for hits, _, ms in firsts]
    pending = [(i, b) for i, (_, b, _) in enumerate(firsts) if b is not None]
    if not pending:
        return out
    uppers = np.concatenate([hi for _, (_, _, hi) in pending])
    m = min(k, uppers.size)
    tau = np.partition(uppers, m - 1)[m - 1]
    for i, (cand, lo, _) in pending:
        started = time.perf_counter()
        part = parts[i]
        with part.lock.read():
            live = (lab for lab in cand[lo <= tau].tolist() if lab not in part.deleted)
            keep = np.fromiter(live, dtype=np.int64)
            hits = part.hits(part.exact_top(q, keep, k)) if keep.size else []
        out[i] = (hits, out[i][1] + (time.perf_counter() - started) * 1000)
    return out
