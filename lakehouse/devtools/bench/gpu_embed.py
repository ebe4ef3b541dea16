"""The auto-embed workload's model part on the machine it runs on: the packaged MiniLM over
generated staffing rows rendered with the benchmark's full-resume template, CUDA when
onnxruntime offers it (``--device``), else every CPU core (``--threads``). Prints texts/s and
the 500K extrapolation.

    python -m lakehouse.devtools.bench.gpu_embed [--rows 20000] [--seconds 120] \
        [--max-tokens 256] [--threads 0] [--device auto|cpu|cuda] [--model F --tokenizer F]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from lakehouse.devtools.datagen import COLUMNS, iter_rows
from lakehouse.platform.config import EmbedSettings
from lakehouse.vectors.embedding.local import LocalProvider

TEMPLATE = (
    "{role} in {city}, {state}. Skills: {skills}. Certifications: {certifications}. {resume_text}"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=EmbedSettings().max_tokens)
    ap.add_argument("--threads", type=int, default=0, help="0: all cores")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--model")
    ap.add_argument("--tokenizer")
    ap.add_argument("--json")
    args = ap.parse_args()
    texts = [TEMPLATE.format_map(dict(zip(COLUMNS, r, strict=True))) for r in iter_rows(args.rows)]
    provider = LocalProvider(
        None,
        model=args.model,
        tokenizer=args.tokenizer,
        max_tokens=args.max_tokens,
        threads=args.threads,
        device=args.device,
    )
    t = time.perf_counter()
    provider.embed(texts[: args.batch])  # warm-up, and a first rate to size the run
    probe = args.batch / (time.perf_counter() - t)
    n = min(len(texts), max(args.batch, int(probe * args.seconds)))
    sample = random.Random(1).sample(texts, n)  # unbiased lengths, then sorted as the worker does
    sample.sort(key=len)
    started = time.perf_counter()
    for i in range(0, n, args.batch):
        provider.embed(sample[i : i + args.batch])
    took = time.perf_counter() - started
    rate = n / took
    out = {
        "providers": provider.providers,
        "device": provider.device,
        "cpus": os.cpu_count(),
        "threads": provider.threads,
        "max_tokens": provider.max_tokens,
        "texts": n,
        "seconds": round(took, 2),
        "texts_per_s": round(rate, 1),
        "mean_chars": round(sum(map(len, sample)) / n),
        "extrapolated_500k_min": round(500_000 / rate / 60, 1),
    }
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
