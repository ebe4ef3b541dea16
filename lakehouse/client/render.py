"""Result values as short text, for whatever shows rows to a person: the terminal verbs'
tables, an assistant's text answers. Pure functions over the gateway's JSON values (no
terminal code): one cell per value, a window of a search snippet around its first match, a
search hit's row and score.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

WIDTH = 60
"""Characters a cell shows before it is cut with an ellipsis."""

ELLIPSIS = "…"
SIMILARITY_METRICS = ("cosine", "ip")
"""Metrics whose distance is ``1 - similarity``: a hit's score is ``1 - distance``."""

_SPACE = re.compile(r"\s")
_NUMERIC = re.compile(
    r"^(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|FLOAT|DOUBLE|REAL|DECIMAL(\(\d+,\s*\d+\))?)$",
    re.IGNORECASE,
)


def truncate(text: str, width: int | None = WIDTH) -> str:
    """``text`` cut to ``width`` characters, the last one an ellipsis when cut."""
    if width is None or len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + ELLIPSIS


def number(value: float) -> str:
    """A float without noise: up to 6 decimals, trailing zeros dropped."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if value == 0 or 1e-4 <= abs(value) < 1e15:
        text = f"{value:.6f}".rstrip("0").rstrip(".")
        return "0" if text in ("", "-0") else text
    return f"{value:.6g}"


def cell(value: Any, width: int | None = WIDTH) -> str:
    """One value on one line: null is empty, floats are short, lists and objects are
    compact JSON, whitespace runs are one space, long text ends in an ellipsis."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number(value)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    else:
        text = str(value)
    return truncate(" ".join(text.split()), width)


def when(value: Any) -> str:
    """An ISO timestamp from the gateway as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    text = str(value or "")
    return text[:19].replace("T", " ") if len(text) >= 19 else text


def csv_value(value: Any) -> str:
    """A value for a CSV field, in full: null is empty, lists and objects are JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def is_numeric(type_name: str) -> bool:
    """Whether a SQL column type (DuckDB's name) holds numbers (right-aligned in tables)."""
    return _NUMERIC.match(type_name.strip()) is not None


def snippet_window(
    snippet: Mapping[str, Any], width: int = WIDTH
) -> tuple[str, list[tuple[int, int]]]:
    """A snippet's text as one line of at most ``width`` characters around its first mark,
    and its marks (``[start, end)`` offsets) moved into that line; an ellipsis stands for
    text cut at either end. Marks out of range are dropped."""
    text = _SPACE.sub(" ", str(snippet.get("text") or ""))  # one line, offsets kept
    marks: list[tuple[int, int]] = []
    for mark in snippet.get("marks") or ():
        try:
            start, end = int(mark[0]), int(mark[1])
        except (TypeError, ValueError, IndexError):
            continue
        start, end = max(start, 0), min(end, len(text))
        if start < end:
            marks.append((start, end))
    marks.sort()
    if len(text) <= width:
        return text, marks
    first = marks[0][0] if marks else 0
    begin = max(0, min(first - width // 4, len(text) - width))
    end = begin + width
    body = list(text[begin:end])
    low, high = 0, len(body)
    if begin > 0:
        body[0], low = ELLIPSIS, 1
    if end < len(text):
        body[-1], high = ELLIPSIS, len(body) - 1
    moved = [(max(s - begin, low), min(e - begin, high)) for s, e in marks]
    return "".join(body), [(s, e) for s, e in moved if s < e]


def hit_row(hit: Mapping[str, Any]) -> dict[str, Any]:
    """A search hit's fields: its dataset ``row`` when the answer has one, else its
    ``metadata``, else nothing."""
    for key in ("row", "metadata"):
        value = hit.get(key)
        if isinstance(value, Mapping):
            return dict(value)
    return {}


def score(hit: Mapping[str, Any], metric: str | None) -> float:
    """``1 - distance`` for cosine and inner-product indexes (higher is closer), else the
    distance itself (see :func:`score_label`)."""
    distance = float(hit.get("distance", 0.0))
    return 1.0 - distance if metric in SIMILARITY_METRICS else distance


def match(hit: Mapping[str, Any], metric: str | None) -> str:
    """A hit's closeness for a reader: a percentage on cosine indexes, else the distance."""
    if metric == "cosine":
        return f"{max(0.0, score(hit, metric)) * 100:.0f}% match"
    return f"distance {float(hit.get('distance', 0.0)):.3g}"


def score_label(metric: str | None) -> str:
    return "score" if metric in SIMILARITY_METRICS else "distance"


def finished(job: dict[str, Any]) -> bool:
    """Whether a job (``GET /v1/jobs/{id}``) is over: failed, or succeeded with every
    auto-embed batch done (its rows are then searchable)."""
    state = job.get("state")
    if state != "succeeded":
        return state == "failed"
    if not (job.get("result") or {}).get("embed_index"):
        return True
    embed = job.get("embed") or {}
    return bool(embed) and embed["batches_done"] >= embed["batches"]
