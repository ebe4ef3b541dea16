"""Search quality of the auto-embed model at a given ``max_tokens``: generated staffing rows
rendered with the full-resume template of :mod:`gpu_embed`, a fixed set of staffing searches
each with the role(s) that answer it, brute-force cosine top 5.

recall: share of queries whose top 5 holds a row of an expected role; precision@5: mean share
of the top-5 rows with an expected role; chance: the same two for 5 rows drawn at random from
the same rows (what a model that understood nothing would score). Also the texts/s of embedding
the rows (sorted by length, in batches, as the embed worker does).

    python -m lakehouse.devtools.bench.embed_quality [--rows 2000] [--max-tokens 128,256] \\
        [--threads 0] [--device auto|cpu|cuda] [--batch 64] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from math import comb
from pathlib import Path

import numpy as np

from lakehouse.devtools.bench.gpu_embed import TEMPLATE
from lakehouse.devtools.datagen import COLUMNS, iter_rows
from lakehouse.vectors.embedding.local import LocalProvider

K = 5

# What a recruiter types, and the datagen roles (``datagen.ROLES``) whose workers answer it.
# Most avoid the role's own title: they name skills, certifications, duties or settings.
QUERIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("forklift driver for night shift at a distribution center", ("Forklift Operator",)),
    ("reach truck operator to put away pallets on high racking", ("Forklift Operator",)),
    ("MIG welder for structural steel fabrication", ("Welder",)),
    ("someone who can TIG weld, plasma cut plate and read weld symbols", ("Welder",)),
    ("journeyman electrician for industrial wiring and conduit bending", ("Electrician",)),
    (
        "troubleshoot VFDs and 480V three-phase motor starters",
        ("Electrician", "Maintenance Technician"),
    ),
    ("HVAC tech with EPA 608 to service rooftop units", ("HVAC Technician",)),
    ("install water heaters and sweat copper fittings", ("Plumber",)),
    ("framing walls and setting concrete forms on commercial jobs", ("Carpenter",)),
    ("Class A CDL driver for regional routes across the Midwest", ("Truck Driver (CDL-A)",)),
    ("driver with a hazmat endorsement and clean ELD logs", ("Truck Driver (CDL-A)",)),
    ("machinist familiar with Haas and Fanuc controls", ("CNC Operator",)),
    ("edit G-code at the machine and set tool offsets", ("CNC Operator",)),
    (
        "inspector who runs CMM inspections and writes nonconformance reports",
        ("Quality Technician",),
    ),
    ("Six Sigma green belt for root cause analysis and ISO 9001 audits", ("Quality Technician",)),
    ("maintenance mechanic for PLC faults, hydraulics and pneumatics", ("Maintenance Technician",)),
    ("run injection molding presses and do quick changeovers", ("Machine Operator",)),
    ("wire harness assembly and soldering from work instructions", ("Assembler",)),
    (
        "line worker for a food packaging plant, GMP trained",
        ("Production Worker", "Packer"),
    ),
    ("pack finished product into cases, build and wrap pallets", ("Packer",)),
    (
        "voice picking order selector for e-commerce fulfillment",
        ("Order Picker", "Warehouse Associate"),
    ),
    (
        "warehouse picker with RF scanner and pallet jack experience",
        ("Warehouse Associate", "Order Picker"),
    ),
    ("feed raw material to production lines, kanban replenishment", ("Material Handler",)),
    (
        "check inbound freight against packing lists and print bills of lading",
        ("Shipping and Receiving Clerk",),
    ),
    ("cycle counts and inventory reconciliation in SAP", ("Inventory Clerk",)),
    (
        "call center rep who answers inbound calls and enters orders in a CRM",
        ("Customer Service Representative",),
    ),
    (
        "office help for calendars, Excel reports and QuickBooks invoices",
        ("Administrative Assistant",),
    ),
    ("guard to patrol plant grounds and monitor CCTV", ("Security Officer",)),
    ("bilingual Spanish-speaking forklift operator in Chicago", ("Forklift Operator",)),
    (
        "entry-level general labor in a warehouse",
        ("Warehouse Associate", "Order Picker", "Material Handler", "Packer"),
    ),
)


@dataclass(frozen=True)
class Quality:
    max_tokens: int
    rows: int
    queries: int
    answerable: int  # queries with at least one row of an expected role among the rows
    recall: float  # share of queries with a row of an expected role in the top K
    precision_at_5: float  # mean share of the top-K rows with an expected role
    chance_recall: float  # the same recall for K rows drawn at random from these rows
    chance_precision: float  # the same precision@5 for random rows: mean share of the role(s)
    texts_per_s: float  # embedding the rows
    truncated_share: float  # rows longer than max_tokens tokens
    misses: list[str]  # queries whose top K holds no expected role


def rows_and_texts(rows: int, seed: int = 42) -> tuple[list[str], list[str]]:
    """Each generated row's role and its text rendered with gpu_embed's TEMPLATE."""
    roles, texts = [], []
    for r in iter_rows(rows, seed):
        record = dict(zip(COLUMNS, r, strict=True))
        roles.append(record["role"])
        texts.append(TEMPLATE.format_map(record))
    return roles, texts


def chance_recall(roles: list[str], k: int = K) -> float:
    """Mean over the queries of P(k rows drawn without replacement hold an expected role)."""
    counts, n = Counter(roles), len(roles)
    miss = [comb(n - sum(counts[r] for r in expected), k) / comb(n, k) for _, expected in QUERIES]
    return 1.0 - sum(miss) / len(miss)


def chance_precision(roles: list[str]) -> float:
    """Mean over the queries of the share of rows with an expected role."""
    counts, n = Counter(roles), len(roles)
    shares = [sum(counts[r] for r in expected) / n for _, expected in QUERIES]
    return sum(shares) / len(shares)


def embed_sorted(provider: LocalProvider, texts: list[str], batch: int) -> np.ndarray:
    """Batches of similar length (as the embed worker does), rows in the input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), provider.dim), np.float32)
    for start in range(0, len(texts), batch):
        rows = order[start : start + batch]
        out[rows] = provider.embed([texts[i] for i in rows])
    return out


def evaluate(
    rows: int = 2000,
    max_tokens: int = 256,
    *,
    threads: int = 0,
    device: str = "auto",
    batch: int = 64,
) -> Quality:
    roles, texts = rows_and_texts(rows)
    provider = LocalProvider(None, max_tokens=max_tokens, threads=threads, device=device)
    provider.embed(texts[:8])  # warm-up: first-run allocations out of the timing
    started = time.perf_counter()
    vectors = embed_sorted(provider, texts, batch)
    rate = len(texts) / (time.perf_counter() - started)
    queries = provider.embed([q for q, _ in QUERIES])
    scores = queries @ vectors.T  # unit vectors: cosine similarity
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    hits, shares, misses = 0, [], []
    for (query, expected), best in zip(QUERIES, top, strict=True):
        good = sum(roles[i] in expected for i in best)
        hits += good > 0
        shares.append(good / K)
        if not good:
            misses.append(query)
    cut = sum(n > max_tokens for n in _unpadded(provider, texts))
    present = set(roles)
    return Quality(
        max_tokens=max_tokens,
        rows=rows,
        queries=len(QUERIES),
        answerable=sum(not present.isdisjoint(expected) for _, expected in QUERIES),
        recall=hits / len(QUERIES),
        precision_at_5=sum(shares) / len(shares),
        chance_recall=chance_recall(roles),
        chance_precision=chance_precision(roles),
        texts_per_s=rate,
        truncated_share=cut / len(texts),
        misses=misses,
    )


def _unpadded(provider: LocalProvider, texts: list[str]) -> list[int]:
    """Token count of each text ([CLS] and [SEP] included) before truncation."""
    provider.tokenizer.no_truncation()
    provider.tokenizer.no_padding()
    try:
        return [len(e.ids) for e in provider.tokenizer.encode_batch(texts)]
    finally:
        provider.tokenizer.enable_truncation(provider.max_tokens)
        provider.tokenizer.enable_padding()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument(
        "--max-tokens",
        action="append",
        help="a value or a comma list; repeatable (default 128,256)",
    )
    ap.add_argument("--threads", type=int, default=0, help="0: all cores")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    sizes = [int(v) for arg in args.max_tokens or ["128,256"] for v in arg.split(",") if v]
    results = []
    print(f"{args.rows} rows, {len(QUERIES)} queries, top {K}")
    print("max_tokens  answerable  recall  precision@5  chance (r / p@5)  texts/s  truncated")
    for size in sizes:
        q = evaluate(args.rows, size, threads=args.threads, device=args.device, batch=args.batch)
        results.append(asdict(q))
        chance = f"{q.chance_recall:.3f} / {q.chance_precision:.3f}"
        print(
            f"{q.max_tokens:>10}  {q.answerable:>10}  {q.recall:6.3f}  {q.precision_at_5:11.3f}  "
            f"{chance:>15}  {q.texts_per_s:7.1f}  {q.truncated_share:9.1%}"
        )
        for miss in q.misses:
            print(f"{'':>12}miss: {miss}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
