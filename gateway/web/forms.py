"""What the pages compute from datasets: filter controls and their predicate, result cards,
the dataset page's upload options and how a revision changed the rows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from lakehouse.platform.errors import BadRequest
from lakehouse.tables.views import ident, literal
from schemas.catalog import Mode, SchemaRule

CHOICES = 60
"""A text column with at most this many distinct values is a drop-down; above, a "contains"
box (unless nearly every row has its own value: names, phones, emails get no control)."""


NO_CONTROL = frozenset({"zip", "zipcode", "zip_code", "postal_code", "phone", "email"})
"""Columns a filter control makes no sense for, whatever their measurements say."""


@dataclass
class Control:
    column: str
    kind: str  # choice | contains | range | flag
    choices: list[str] = field(default_factory=list)
    lo: float | None = None
    hi: float | None = None

    @property
    def label(self) -> str:
        return self.column.replace("_", " ")


def numeric(duck_type: str) -> bool:
    return duck_type in {"BIGINT", "INTEGER", "DOUBLE", "FLOAT", "SMALLINT", "HUGEINT"}


def controls_sql(dataset: str, columns: list[tuple[str, str]], skip: set[str]) -> str:
    """One statement measuring every column a control could be built for."""
    parts = ["count(*) AS n"]
    for name, typ in columns:
        if name in skip or name.lower() in NO_CONTROL:
            continue
        c = ident(name)
        if typ == "VARCHAR":
            parts += [f"approx_count_distinct({c})", f"avg(length({c}))"]
        elif numeric(typ):
            parts += [f"min({c})", f"max({c})"]
    return f"SELECT {', '.join(parts)} FROM {ident(dataset)}"


def plan_controls(
    columns: list[tuple[str, str]], skip: set[str], stats: list[Any]
) -> tuple[list[Control], list[str]]:
    """Controls from the measurements of :func:`controls_sql`, and the text columns that
    need their distinct values listed (drop-downs)."""
    n, values, out, listed = stats[0] or 0, iter(stats[1:]), [], []
    for name, typ in columns:
        if name in skip or name.lower() in NO_CONTROL:
            continue
        if typ == "VARCHAR":
            distinct, avg_len = next(values) or 0, next(values) or 0
            if avg_len > 150 or distinct > max(CHOICES, n // 2):
                continue  # long text or nearly unique: no control
            if distinct <= CHOICES:
                out.append(Control(name, "choice"))
                listed.append(name)
            else:
                out.append(Control(name, "contains"))
        elif numeric(typ):
            lo, hi = next(values), next(values)
            if lo is not None and hi is not None and lo != hi:
                out.append(Control(name, "range", lo=float(lo), hi=float(hi)))
        elif typ == "BOOLEAN":
            out.append(Control(name, "flag"))
    order = {"choice": 0, "contains": 1, "range": 2, "flag": 3}
    return sorted(out, key=lambda c: order[c.kind]), listed


def predicate(controls: list[Control], params: Mapping[str, str]) -> str | None:
    """The SQL predicate of the filled-in controls (``f.<col>``, ``min.<col>``, ``max.<col>``);
    values become literals, never SQL."""
    terms = []
    for c in controls:
        col = ident(c.column)
        value = (params.get(f"f.{c.column}") or "").strip()
        if c.kind == "choice" and value:
            terms.append(f"{col} = {literal(value)}")
        elif c.kind == "contains" and value:
            terms.append(f"contains(lower({col}), {literal(value.lower())})")
        elif c.kind == "flag" and value:
            terms.append(col)
        elif c.kind == "range":
            for bound, op in (("min", ">="), ("max", "<=")):
                raw = (params.get(f"{bound}.{c.column}") or "").strip()
                if not raw:
                    continue
                try:
                    number = float(raw)
                except ValueError:
                    raise BadRequest(f"{c.label}: {raw!r} is not a number") from None
                if not math.isfinite(number):
                    raise BadRequest(f"{c.label}: {raw!r} is not a number")
                terms.append(f"{col} {op} {number!r}")
    return " AND ".join(terms) or None


TITLE = ("name", "full_name", "worker_name")
ROLE = ("role", "title", "job_title", "position")
PLACE = ("city", "state")
CHIPS = ("certifications", "skills")
FACTS = ("reliability", "available", "hourly_rate", "shift", "years_experience")


@dataclass
class Card:
    id: str
    title: str
    subtitle: str
    chips: list[str]
    facts: list[tuple[str, Any]]
    row: dict[str, Any]
    score: str | None = None
    snippet: list[tuple[str, bool]] = field(default_factory=list)  # (text, marked)
    snippet_column: str | None = None


def first(row: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    return next((row[n] for n in names if row.get(n) not in (None, "")), None)


def card(hit_id: str, row: dict[str, Any], shown: list[str]) -> Card:
    """A result as a recruiter reads it: name, role and place, key certifications, the facts
    that decide a shift (reliability, availability, rate); generic columns otherwise."""
    title = first(row, TITLE)
    role = first(row, ROLE)
    place = ", ".join(str(row[p]) for p in PLACE if row.get(p))
    subtitle = " · ".join(str(x) for x in (role, place) if x)
    chips_text = first(row, CHIPS)
    chips = [c.strip() for c in str(chips_text).split(",") if c.strip()][:4] if chips_text else []
    facts = [(f.replace("_", " "), shown_value(row[f])) for f in FACTS if row.get(f) is not None]
    if title is None and not subtitle:  # not a staffing table: its first columns
        facts = [(k, row[k]) for k in shown[:5]]
    return Card(hit_id, str(title if title is not None else hit_id), subtitle, chips, facts, row)


def shown_value(v: Any) -> Any:
    return ("yes" if v else "no") if isinstance(v, bool) else v


def segments(text: str, marks: list[list[int]]) -> list[tuple[str, bool]]:
    """``text`` cut at ``marks`` into (piece, marked) for the template to escape and wrap."""
    out, at = [], 0
    for start, end in marks:
        if start < at or end > len(text):
            continue
        if start > at:
            out.append((text[at:start], False))
        out.append((text[start:end], True))
        at = end
    if at < len(text):
        out.append((text[at:], False))
    return out


# ---- the dataset page: upload options, revisions -------------------------------------------
@dataclass
class Upload:
    """The dataset page's upload form, checked: how the file changes the dataset."""

    mode: Mode = "replace"
    key: str | None = None
    delete_missing: bool = False
    schema: SchemaRule = "strict"
    embed_index: str | None = None


def upload_options(form: Mapping[str, Any], columns: list[str], indexes: list[str]) -> Upload:
    """The form's fields (``mode``, ``key``, ``delete_missing``, ``schema``, ``embed_index``);
    the key and the tick box apply to an upsert only (the form shows them all the time)."""
    mode = str(form.get("mode") or "replace")
    schema = str(form.get("schema") or "strict")
    if mode not in get_args(Mode):
        raise BadRequest(f"mode {mode!r}: replace, append or upsert")
    if schema not in get_args(SchemaRule):
        raise BadRequest(f"schema {schema!r}: strict, evolve or any")
    out = Upload(mode=mode, schema=schema)  # type: ignore[arg-type]
    if mode == "upsert":
        out.key = str(form.get("key") or "").strip() or None
        if out.key is None:
            raise BadRequest("upsert by key needs a key column")
        if out.key not in columns:
            raise BadRequest(f"key column {out.key!r} is not a column of the dataset")
        out.delete_missing = bool(form.get("delete_missing"))
    embed = str(form.get("embed_index") or "").strip()
    if embed:
        if embed not in indexes:
            raise BadRequest(f"no index {embed!r} made from this dataset")
        out.embed_index = embed
    return out


def counts(change: Mapping[str, Any] | None) -> str:
    """``+inserted ~updated −deleted`` of a revision or an ingest result ('' for a
    compaction, whose rows do not change, and for an event without a summary)."""
    if not change or change.get("mode") == "compact":
        return ""
    inserted, updated, deleted = (
        int(change.get(k) or 0) for k in ("inserted", "updated", "deleted")
    )
    return f"+{inserted:,} ~{updated:,} −{deleted:,}"


def columns_changed(change: Mapping[str, Any] | None) -> list[str]:
    """The schema change of a revision or an ingest result, one phrase a kind:
    ``added a, b``, ``widened rate → float64``, ``dropped c``."""
    schema = (change or {}).get("schema_change") or {}
    out = []
    if schema.get("added"):
        out.append("added " + ", ".join(schema["added"]))
    if schema.get("widened"):
        out.append("widened " + ", ".join(f"{c} → {t}" for c, t in schema["widened"].items()))
    if schema.get("dropped"):
        out.append("dropped " + ", ".join(schema["dropped"]))
    return out
