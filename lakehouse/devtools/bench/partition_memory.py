"""Memory of one vector partition per vector, next to hnswlib's own formula and a bare
hnswlib index of the same vectors, each measured in a fresh process (resident memory after
the load minus before it).

    python -m lakehouse.devtools.bench.partition_memory [--n 500000] [--dim 384] \
        [--metadata/--no-metadata] [--mirror] [--json]

The vectors arrive as the vector worker gets them: batches of 1,000 with (by default)
metadata on every vector, as auto-embed-sized items (``{"dataset", "row", "role"}``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

BATCH = 1000
MODULE = "lakehouse.devtools.bench.partition_memory"
M = 16


def formula(n: int, dim: int) -> int:
    """hnswlib's own layout: the vector, the level-0 links and the label, per element."""
    return n * (dim * 4 + M * 2 * 4 + 4 + 8)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _measure(kind: str, n: int, dim: int, metadata: bool, mirror: bool) -> dict[str, Any]:
    """In this process: build ``kind`` ("raw" or "partition") and return its RSS delta."""
    # Everything imported before the first reading: only the index's own memory counts.
    import hnswlib
    import numpy as np

    from lakehouse.vectors.batches import Batch
    from lakehouse.vectors.partition import Partition
    from schemas.vectors import IndexSpec

    rng = np.random.default_rng(7)
    roles = ["Forklift Operator", "Welder", "CNA", "Warehouse Associate", "Electrician"]
    before = _rss()
    if kind == "raw":
        index = hnswlib.Index(space="cosine", dim=dim)
        index.init_index(max_elements=n, M=M, ef_construction=200)
        for start in range(0, n, BATCH):
            block = rng.standard_normal((min(BATCH, n - start), dim), dtype=np.float32)
            index.add_items(block, np.arange(start, start + len(block)))
        return {"bytes": _rss() - before}
    spec = IndexSpec(name="mem", dim=dim, partitions=1, dataset="workers" if mirror else None)
    part = Partition(spec, 0, mirror=mirror)
    for seq, start in enumerate(range(0, n, BATCH), start=1):
        size = min(BATCH, n - start)
        ids = [f"workers:{i:08d}" for i in range(start, start + size)]
        meta: list[dict[str, Any] | None] = [None] * size
        if metadata:
            meta = [
                {"dataset": "workers", "row": i, "role": roles[i % 5]}
                for i in range(start, start + size)
            ]
        vectors = rng.standard_normal((size, dim), dtype=np.float32)
        part.apply(Batch(ids, ["upsert"] * size, vectors, meta), seq)
    return {
        "bytes": _rss() - before,
        "capacity": part.index.get_max_elements(),
        "items_bytes": part.items.nbytes(),
        "mirror_bytes": part.int8.nbytes if part.int8 is not None else 0,
    }


def run(n: int, dim: int, *, metadata: bool = True, mirror: bool = False) -> dict[str, Any]:
    """Both measurements, each in its own process; bytes per vector and the ratios."""
    out: dict[str, Any] = {"n": n, "dim": dim, "metadata": metadata, "mirror": mirror}
    for kind in ("raw", "partition"):
        argv = [sys.executable, "-m", MODULE, "--child", kind, "--n", str(n), "--dim", str(dim)]
        argv += ["--metadata"] if metadata else ["--no-metadata"]
        argv += ["--mirror"] if mirror else []
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        out[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    floor = formula(n, dim) / n
    ours = out["partition"]["bytes"] / n
    out.update(
        formula_per_vector=floor,
        raw_per_vector=out["raw"]["bytes"] / n,
        partition_per_vector=ours,
        ratio_to_formula=ours / floor,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--metadata", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--mirror", action="store_true", help="keep the int8 mirror (filtering)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=["raw", "partition"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.n, args.dim, args.metadata, args.mirror)))
        return
    result = run(args.n, args.dim, metadata=args.metadata, mirror=args.mirror)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.n:,} x {args.dim}, metadata {'on' if args.metadata else 'off'}, "
        f"int8 mirror {'on' if args.mirror else 'off'}:\n"
        f"  partition  {result['partition_per_vector']:,.0f} B/vector "
        f"({result['ratio_to_formula']:.2f}x hnswlib's formula)\n"
        f"  formula    {result['formula_per_vector']:,.0f} B/vector\n"
        f"  bare hnswlib index {result['raw_per_vector']:,.0f} B/vector"
    )


if __name__ == "__main__":
    main()
