"""The int8 mirror of a partition's vectors: for each label an int8 copy, its scale, its
squared norm and the norm of its rounding error (dim + 12 bytes). A filtered search scores a
match set with it as intervals that hold the true distance (Cauchy–Schwarz), so only the few
matches the intervals cannot separate need their float vectors read back from hnswlib.

Rows are grown with spare capacity by :func:`grown`; fresh zero pages are mapped lazily, so
capacity costs address space, not memory. Saved in a snapshot as ``FILE``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = "mirror.npz"


def grown(a: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows, *a.shape[1:]), dtype=a.dtype)
    out[: len(a)] = a
    return out


class Int8Mirror:
    def __init__(self, dim: int, rows: int = 0) -> None:
        self.q8 = np.zeros((rows, dim), dtype=np.int8)
        self.qscale = np.zeros(rows, dtype=np.float32)
        self.sqnorm = np.zeros(rows, dtype=np.float32)
        self.qerr = np.zeros(rows, dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return self.q8.nbytes + self.qscale.nbytes + self.sqnorm.nbytes + self.qerr.nbytes

    def grow(self, rows: int) -> None:
        if len(self.q8) < rows:
            self.q8, self.qscale = grown(self.q8, rows), grown(self.qscale, rows)
            self.sqnorm, self.qerr = grown(self.sqnorm, rows), grown(self.qerr, rows)

    def put(self, labels: np.ndarray, v: np.ndarray) -> None:
        """Quantise the (prepared) vectors ``v`` into rows ``labels`` (grown beforehand)."""
        scale = np.abs(v).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q8 = np.rint(v / scale[:, None]).astype(np.int8)
        self.q8[labels] = q8
        self.qscale[labels] = scale
        self.sqnorm[labels] = (v * v).sum(axis=1)
        # |v·q - scale·(q8·q)| <= |v - scale·q8| · |q| (Cauchy-Schwarz); rounded up a little
        # so float32 arithmetic in the scores cannot break the bound.
        residual = np.linalg.norm(v - q8.astype(np.float32) * scale[:, None], axis=1)
        self.qerr[labels] = residual * 1.001 + 1e-6

    def bounds(
        self, q: np.ndarray, labels: np.ndarray, k: int, metric: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores of ``labels`` as intervals around the true distance to the prepared query
        ``q``: the labels that may be among the k nearest (the lower bound reaches below the
        k-th smallest upper bound), with their lower and upper bounds."""
        lo = np.empty(labels.size, dtype=np.float32)
        hi = np.empty(labels.size, dtype=np.float32)
        qq = float(q @ q)
        reach = float(np.sqrt(qq)) * (2.0 if metric == "l2" else 1.0)
        for start in range(0, labels.size, 4096):
            part = labels[start : start + 4096]
            dots = (self.q8[part].astype(np.float32) @ q) * self.qscale[part]
            if metric == "l2":
                approx = self.sqnorm[part] - 2 * dots + qq
            else:
                approx = 1.0 - dots
            err = self.qerr[part] * reach
            lo[start : start + 4096] = approx - err
            hi[start : start + 4096] = approx + err
        tau = np.partition(hi, k - 1)[k - 1] if k < labels.size else hi.max()
        keep = lo <= tau
        return labels[keep], lo[keep], hi[keep]

    def save(self, path: Path, n: int) -> None:
        """The first ``n`` rows to ``path`` (an .npz)."""
        np.savez(
            path, q8=self.q8[:n], qscale=self.qscale[:n], sqnorm=self.sqnorm[:n], qerr=self.qerr[:n]
        )

    @classmethod
    def load(cls, path: Path, n: int, dim: int, rows: int) -> Int8Mirror | None:
        """A saved mirror of exactly ``n`` rows of ``dim``, grown to ``rows``; None when the
        file is missing or does not match."""
        if not path.exists():
            return None
        with np.load(path) as z:
            if z["q8"].shape != (n, dim):
                return None
            out = cls(dim)
            out.q8, out.qscale = z["q8"], z["qscale"]
            out.sqnorm, out.qerr = z["sqnorm"], z["qerr"]
        out.grow(rows)
        return out
