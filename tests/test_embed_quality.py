"""The auto-embed quality set (``lakehouse.devtools.bench.embed_quality``) at a tiny size:
its queries name real datagen roles, and the model finds them far above chance."""

from __future__ import annotations

import pytest

from lakehouse.devtools.bench.embed_quality import (
    QUERIES,
    chance_precision,
    chance_recall,
    evaluate,
    rows_and_texts,
)
from lakehouse.devtools.datagen import ROLES


def test_every_expected_role_is_a_datagen_role() -> None:
    assert len(QUERIES) >= 20
    for query, expected in QUERIES:
        assert expected, query
        assert set(expected) <= set(ROLES), query
    assert len({q for q, _ in QUERIES}) == len(QUERIES)


def test_chance_is_what_random_rows_would_score() -> None:
    roles, _ = rows_and_texts(200)
    assert 0.0 < chance_precision(roles) < chance_recall(roles) < 1.0
    welders = sum("Welder" in expected for _, expected in QUERIES) / len(QUERIES)
    assert chance_recall(["Welder"] * 10) == pytest.approx(welders)
    assert chance_precision(["Welder"] * 10) == pytest.approx(welders)
    # one welder in ten rows: five drawn at random include it half the time
    half = chance_recall(["Welder"] + ["Packer"] * 9) - chance_recall(["Packer"] * 10)
    assert half == pytest.approx(welders / 2)


def test_the_model_finds_the_expected_roles_far_above_chance() -> None:
    q = evaluate(120, 128, threads=0, device="cpu")
    assert q.queries == len(QUERIES) >= 20 and q.rows == 120
    assert 0.0 <= q.recall <= 1.0 and 0.0 <= q.precision_at_5 <= 1.0
    assert len(q.misses) == round(q.queries * (1 - q.recall))
    # Five of these 120 rows drawn at random hold an expected role for ~25% of the queries
    # (q.chance_recall, from the role counts), and ~6% of random top-5 rows have one
    # (q.chance_precision). Two queries have no row of their role at this size (HVAC,
    # plumbing: ~1.5% of rows each), so 28/30 is the ceiling; the model scored 28/30 and
    # precision@5 0.74 when this was written (0.82 at 200 rows). The floors, twice chance and
    # at least 0.5 / 0.4, fail only if the ranking stops carrying meaning (a broken tokenizer,
    # pooling or normalization), never on a rounding difference between machines.
    assert q.answerable == 28
    assert q.recall >= max(0.5, 2 * q.chance_recall), q
    assert q.precision_at_5 >= max(0.4, 2 * q.chance_precision), q
