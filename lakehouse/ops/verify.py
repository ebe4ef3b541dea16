"""``lakehouse verify``: the state rebuilt from the log against the live one.

Checked, each as ``rebuilt`` vs ``live``:

- catalog: the manifests folded from ``LAKEHOUSE_CATALOG`` (revision, schema fingerprint,
  objects, row count) vs what the catalog worker serves and vs the ``_catalog/`` mirror; every
  dataset's revision history is 1, 2, ... with no gap;
- datasets: row count and content checksum (``sum(hash(row))``, order-free) computed here with
  DuckDB straight from the manifest's objects vs the same SQL through a live query worker, and
  both vs the manifest's row count; every object exists with its recorded size;
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


async def live_checksum(nc: NATS, name: str, catalog_seq: int, timeout: float) -> tuple[int, str]:
    req = SqlRequest(sql=CHECKSUM_SQL.format(src=ident(name)), min_catalog_seq=catalog_seq)
    body = json.loads(await call(nc, S.QUERY_SQL, req, timeout=timeout, what="query"))
    n, h = body["rows"][0]
    return int(n), str(h)


async def verify_catalog(
    nc: NATS, storage: Storage, report: Report, timeout: float
) -> dict[str, Manifest]:
    catalog_fold = CatalogFold()
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
    return rebuilt


async def verify_datasets(
    nc: NATS, storage: Storage, manifests: dict[str, Manifest], report: Report, timeout: float
) -> None:
    with tempfile.TemporaryDirectory(prefix="lakehouse-verify-") as tmp:
        for name, m in manifests.items():
            for obj in m.objects:
                try:
                    size = (await storage.stat(obj.key)).size
                except LakehouseError:
                    size = None
                report.diff(f"dataset {name} object {obj.key} size", obj.size, size)
            try:
                rows, checksum = await dataset_checksum(storage, m, Path(tmp))
            except Exception as exc:  # a missing or unreadable object is a difference too
                report.diffs.append(f"dataset {name}: objects unreadable: {exc}")
                continue
            live_rows, live_sum = await live_checksum(nc, name, report.catalog_seq, timeout)
            report.diff(f"dataset {name} row count (manifest vs objects)", m.row_count, rows)
            report.diff(f"dataset {name} row count (query worker)", rows, live_rows)
            report.diff(f"dataset {name} checksum (query worker)", checksum, live_sum)
            report.datasets[name] = {
                "revision": m.revision,
                "row_count": rows,
                "checksum": checksum,
                "objects": len(m.objects),
            }


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
    nc: NATS, storage: Storage, *, expect: dict[str, Any] | None = None, timeout: float = 30.0
) -> Report:
    report = Report()
    manifests = await verify_catalog(nc, storage, report, timeout)
    await verify_datasets(nc, storage, manifests, report, timeout)
    await verify_vectors(nc, report, timeout)
    if expect:
        check_expected(report, expect)
    return report


def expected_index_digest(ids_by_partition: dict[int, list[str]]) -> str:
    """The ``digest`` of an index whose partitions hold exactly these ids (for ``expect``)."""
    return _index_digest({p: {"digest": ids_digest(ids)} for p, ids in ids_by_partition.items()})
