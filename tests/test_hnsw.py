"""Partition internals: filtered (subset) search is exact with and without the int8 mirror."""

from __future__ import annotations

import numpy as np
import pytest

from lakehouse.devtools.bench.data import clustered
from lakehouse.vectors.batches import Batch
from lakehouse.vectors.partition import Partition
from schemas.vectors import IndexSpec


@pytest.mark.parametrize("mirror", [False, True])
def test_subset_search_is_exact(mirror: bool) -> None:
    n, dim = 3000, 48
    data = clustered(n, dim, centers=30)
    spec = IndexSpec(name="unit", dim=dim, partitions=1)
    part = Partition(spec, 0, threads=1, mirror=mirror)
    ids = [f"i{i}" for i in range(n)]
    part.apply(Batch(ids, ["upsert"] * n, data, [None] * n), seq=1)
    assert (part.q8.shape[0] >= n) is mirror  # no int8 copy unless asked for
    rng = np.random.default_rng(3)
    allowed = sorted(rng.choice(n, 150, replace=False).tolist())
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    for q in clustered(20, dim, centers=30, sample=4):
        got = [i for i, _, _ in part.search_subset(q, [ids[i] for i in allowed], 10)]
        d = 1 - unit[allowed] @ (q / np.linalg.norm(q))
        want = [ids[allowed[i]] for i in np.argsort(d)[:10]]
        assert got == want
