"""``lakehouse verify``: the state rebuilt from the log against the live one.

Checked, each as ``rebuilt`` vs ``live``:

- catalog: the manifests folded from ``LAKEHOUSE_CATALOG`` (revision, schema fingerprint,
  objects, row count) vs what the catalog worker serves and vs the ``_catalog/`` mirror; every
  dataset's revision history is 1, 2, ... with no gap;
- catalog events: each one consistent with the state before it (revision +1; an upsert's row
  count is the previous one + inserted - deleted and keeps every object and delete set; a
  compaction keeps the row count and leaves no delete set; an append keeps every object);
- datasets: row count and content checksum (``sum(hash(row))``, order-free) computed here with
  DuckDB straight from the manifest's objects vs the same SQL through a live query worker, and
  both vs the manifest's row count; every object and delete set exists with its recorded size.
  The same for each of the dataset's last ``keep_revisions`` revisions (the live side through
  time travel, ``SqlRequest.as_of``), in ``datasets[name]["revisions"]``; a revision whose
  objects gc collected is skipped and listed in ``datasets[name]["collected"]``;
- vector indexes: the id set of every partition folded from ``LAKEHOUSE_VECTORS`` (count and
  digest) vs the partition owners' live id sets; a partition nobody answers for is a diff.

``expect`` adds an independently computed state (e.g. from the input file), compared with the
live one: ``{"datasets": {name: {"row_count": n, "checksum": s}}, "indexes": {name: {"count":
n, "digest": d}}}`` (checksum and digest optional). HNSW graphs themselves are not compared:
a multi-threaded build inserts concurrently, so two builds of one log are equally good graphs
with different edges; ids and counts are exact.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
from nats.aio.client import Client as NATS

from lakehouse.ops.replay import CatalogFold, VectorFold, fold
from lakehouse.platform.errors import LakehouseError, Unavailable
from lakehouse.platform.rpc import call, scatter
from lakehouse.platform.storage import Storage
from lakehouse.platform.streams import bounds
from lakehouse.tables import catalog
from lakehouse.tables.views import ident, local_view_sql
from lakehouse.vectors.indexes import ids_digest, list_indexes
from schemas import subjects as S
from schemas.catalog import Manifest
from schemas.query import SqlRequest
from schemas.vectors import SearchRequest

CHECKSUM_SQL = "SELECT count(*), CAST(coalesce(sum(hash(t)), 0) AS VARCHAR) FROM {src} AS t"


@dataclass
class Report:
    diffs: list[str] = field(default_factory=list)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    indexes: dict[str, dict[str, Any]] = field(default_factory=dict)
    catalog_seq: int = 0
    vectors_seq: int = 0

    def diff(self, what: str, rebuilt: Any, live: Any) -> None:
        if rebuilt != live:
            self.diffs.append(f"{what}: rebuilt {rebuilt!r} != live {live!r}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.diffs,
            "diffs": self.diffs,
            "catalog_seq": self.catalog_seq,
            "vectors_seq": self.vectors_seq,
            "datasets": self.datasets,
            "indexes": self.indexes,
        }


def manifest_view(m: Manifest) -> dict[str, Any]:
    return {
        "revision": m.revision,
        "schema_fingerprint": m.schema_fingerprint,
        "objects": sorted((o.key, o.size, o.rows) for o in m.objects),
        "deletes": sorted((d.key, d.size, d.rows) for d in m.deletes),
        "row_count": m.row_count,
    }


async def dataset_checksum(storage: Storage, m: Manifest, work: Path) -> tuple[int, str]:
    """Row count and checksum computed here, from the objects themselves (through the same
    view a query worker creates)."""
    view = await local_view_sql(storage, m, work)

    def run() -> tuple[int, str]:
        with duckdb.connect() as con:
            con.execute(view)
            n, h = con.execute(CHECKSUM_SQL.format(src=ident(m.name))).fetchone() or (0, "0")
            return int(n), str(h)

    return await asyncio.to_thread(run)


async def live_checksum(
    nc: NATS,
    name: str,
    catalog_seq: int,
    timeout: float,
    as_of: dict[str, int] | None = None,
) -> tuple[int, str]:
    """The same checksum through a live query worker (``as_of``: at those revisions)."""
    req = SqlRequest(
        sql=CHECKSUM_SQL.format(src=ident(name)), min_catalog_seq=catalog_seq, as_of=as_of
    )
    body = json.loads(await call(nc, S.QUERY_SQL, req, timeout=timeout, what="query"))
    n, h = body["rows"][0]
    return int(n), str(h)


async def object_sizes(storage: Storage, m: Manifest) -> dict[str, int | None]:
    """Stored size of each object and delete set of ``m`` (None: not there)."""
    sizes: dict[str, int | None] = {}
    for obj in m.stored:
        try:
            sizes[obj.key] = (await storage.stat(obj.key)).size
        except LakehouseError:
            sizes[obj.key] = None
    return sizes


async def verify_catalog(
    nc: NATS, storage: Storage, report: Report, timeout: float, keep_revisions: int = 1
) -> CatalogFold:
    """The catalog folded from its stream (each event checked against the state before it)
    vs the catalog worker and the ``_catalog/`` mirror."""
    catalog_fold = CatalogFold(keep_revisions)
    start, end = await bounds(nc, S.STREAM_CATALOG)
    report.catalog_seq = end
    await fold(nc, S.STREAM_CATALOG, catalog_fold.apply, start=start, end=end)
    report.diffs += [f"catalog {e}" for e in catalog_fold.errors]
    rebuilt = catalog_fold.manifests()
    for name, revisions in sorted(catalog_fold.history.items()):
        if start == 1 and revisions != list(range(1, len(revisions) + 1)):
            report.diffs.append(f"dataset {name}: revision history {revisions} has gaps")
    try:
        listing = await call(nc, S.CATALOG_LIST, b"{}", timeout=timeout, what="catalog")
        served = json.loads(listing)["datasets"]
    except Unavailable:
        if rebuilt:  # datasets exist, and nothing serves them
            report.diffs.append("catalog: no catalog worker answers")
        served = [m.model_dump(mode="json") for m in rebuilt.values()]
    live = {m.name: m for m in (Manifest.model_validate(d) for d in served)}
    mirror = {m.name: m for m in await catalog.load_manifests(storage)}
    report.diff("dataset names (catalog worker)", sorted(rebuilt), sorted(live))
    report.diff("dataset names (_catalog mirror)", sorted(rebuilt), sorted(mirror))
    for name, m in rebuilt.items():
        for label, other in (("catalog worker", live), ("_catalog mirror", mirror)):
            if name in other:
                report.diff(
                    f"dataset {name} manifest ({label})",
                    manifest_view(m),
                    manifest_view(other[name]),
                )
    return catalog_fold


async def verify_datasets(
    nc: NATS, storage: Storage, catalog_fold: CatalogFold, report: Report, timeout: float
) -> None:
    with tempfile.TemporaryDirectory(prefix="lakehouse-verify-") as tmp:
        for name, m in catalog_fold.manifests().items():
            sizes = await object_sizes(storage, m)
            for obj in m.stored:
                report.diff(f"dataset {name} object {obj.key} size", obj.size, sizes[obj.key])
            try:
                rows, checksum = await dataset_checksum(storage, m, Path(tmp))
            except Exception as exc:  # a missing or unreadable object is a difference too
                report.diffs.append(f"dataset {name}: objects unreadable: {exc}")
                continue
            live_rows, live_sum = await live_checksum(nc, name, report.catalog_seq, timeout)
            report.diff(f"dataset {name} row count (manifest vs objects)", m.row_count, rows)
            report.diff(f"dataset {name} row count (query worker)", rows, live_rows)
            report.diff(f"dataset {name} checksum (query worker)", checksum, live_sum)
            revisions: dict[int, dict[str, Any]] = {}
            collected: list[int] = []
            for revision, old in catalog_fold.revisions(name).items():
                current = (rows, checksum) if revision == m.revision else None
                got = await verify_revision(nc, storage, old, current, report, timeout, Path(tmp))
                if got is None:
                    collected.append(revision)
                elif got:
                    revisions[revision] = got
            report.datasets[name] = {
                "revision": m.revision,
                "row_count": rows,
                "checksum": checksum,
                "objects": len(m.objects),
                "revisions": revisions,
                "collected": collected,
            }


async def verify_revision(
    nc: NATS,
    storage: Storage,
    m: Manifest,
    rebuilt: tuple[int, str] | None,
    report: Report,
    timeout: float,
    work: Path,
) -> dict[str, Any] | None:
    """Row count and checksum of one revision rebuilt here (``rebuilt``: already computed,
    the current revision) vs a query worker reading it through ``as_of``, and vs the
    manifest's row count. None when gc collected some of its objects; {} when unreadable."""
    what = f"dataset {m.name} revision {m.revision}"
    if rebuilt is None:
        sizes = await object_sizes(storage, m)
        if None in sizes.values():
            return None  # collected: time travel to it is a 400 too
        for obj in m.stored:
            report.diff(f"{what} object {obj.key} size", obj.size, sizes[obj.key])
        try:
            rebuilt = await dataset_checksum(storage, m, work)
        except Exception as exc:
            report.diffs.append(f"{what}: objects unreadable: {exc}")
            return {}
        report.diff(f"{what} row count (manifest vs objects)", m.row_count, rebuilt[0])
    rows, checksum = rebuilt
    try:
        live = await live_checksum(
            nc, m.name, report.catalog_seq, timeout, as_of={m.name: m.revision}
        )
    except LakehouseError as exc:
        if exc.status == 400 and None in (await object_sizes(storage, m)).values():
            return None  # collected meanwhile (a gc sweep ran)
        report.diffs.append(f"{what}: the query worker cannot read it (as_of): {exc.detail}")
    else:
        report.diff(f"{what} row count (query worker, as_of)", rows, live[0])
        report.diff(f"{what} checksum (query worker, as_of)", checksum, live[1])
    return {"row_count": rows, "checksum": checksum}


def covers(wanted: set[int], replies: list[bytes]) -> bool:
    return wanted <= {p["partition"] for r in replies for p in json.loads(r)}


async def verify_vectors(nc: NATS, report: Report, timeout: float) -> None:
    specs = await list_indexes(nc.jetstream())
    vector_fold = VectorFold(specs)
    start, end = await bounds(nc, S.STREAM_VECTORS)
    report.vectors_seq = end
    await fold(nc, S.STREAM_VECTORS, vector_fold.apply, start=start, end=end)
    for spec in specs:
        rebuilt = vector_fold.partitions(spec.name)
        wanted = set(range(spec.partitions))
        live: dict[int, dict[str, Any]] = {}
        deadline = asyncio.get_running_loop().time() + timeout
        while True:  # an owner may still be applying the tail of the log; wait for it
            raw = await scatter(
                nc,
                S.search(spec.name),
                SearchRequest(vector=[], op="ids"),
                timeout=min(timeout, 5.0),
                done=partial(covers, wanted),
            )
            live = {p["partition"]: p for r in raw for p in json.loads(r)}
            applied = all(
                live.get(p, {}).get("covered_seq", 0) >= vector_fold.last_seq.get((spec.name, p), 0)
                for p in wanted
            )
            if (applied and wanted <= set(live)) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
        for p in sorted(wanted):
            if p not in live:
                report.diffs.append(f"index {spec.name} partition {p}: no owner answered")
                continue
            got = {"count": live[p]["count"], "digest": live[p]["ids_digest"]}
            report.diff(f"index {spec.name} partition {p} ids", rebuilt[p], got)
        ids = sum(r["count"] for r in rebuilt.values())
        report.indexes[spec.name] = {
            "count": ids,
            "partitions": {str(p): r["count"] for p, r in rebuilt.items()},
            "digest": _index_digest(rebuilt),
        }
    report.diffs += [f"vectors {e}" for e in vector_fold.errors]


def _index_digest(parts: dict[int, dict[str, Any]]) -> str:
    return hashlib.sha256("".join(parts[p]["digest"] for p in sorted(parts)).encode()).hexdigest()


def check_expected(report: Report, expect: dict[str, Any]) -> None:
    for section, what, missing in (
        ("datasets", "dataset", "not registered"),
        ("indexes", "index", "not defined"),
    ):
        live: dict[str, dict[str, Any]] = getattr(report, section)
        for name, want in (expect.get(section) or {}).items():
            have = live.get(name)
            if have is None:
                report.diffs.append(f"{what} {name}: expected, {missing}")
                continue
            for k, v in want.items():
                if k in have and have[k] != v:
                    report.diffs.append(f"{what} {name} {k}: expected {v!r}, live {have[k]!r}")


async def verify(
    nc: NATS,
    storage: Storage,
    *,
    expect: dict[str, Any] | None = None,
    timeout: float = 30.0,
    keep_revisions: int = 1,
) -> Report:
    """Everything in the module docstring; ``keep_revisions`` (``catalog.keep_revisions``):
    how many of each dataset's last revisions to check."""
    report = Report()
    catalog_fold = await verify_catalog(nc, storage, report, timeout, keep_revisions)
    await verify_datasets(nc, storage, catalog_fold, report, timeout)
    await verify_vectors(nc, report, timeout)
    if expect:
        check_expected(report, expect)
    return report


def expected_index_digest(ids_by_partition: dict[int, list[str]]) -> str:
    """The ``digest`` of an index whose partitions hold exactly these ids (for ``expect``)."""
    return _index_digest({p: {"digest": ids_digest(ids)} for p, ids in ids_by_partition.items()})
