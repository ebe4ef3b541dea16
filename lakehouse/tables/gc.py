"""Orphan sweeper: delete data objects no retained revision references, once older than a
grace period.

Objects are immutable and written before they are registered, so a young unreferenced object
may belong to an ingest in flight; the grace period protects it. The objects (and delete sets)
of each dataset's last ``keep`` revisions are kept for time travel (``as_of``); an older
revision whose objects a sweep deletes is reported in ``dropped_revisions``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NATS

from lakehouse.platform.storage import Storage, keys
from lakehouse.tables import catalog
from schemas.catalog import Manifest

log = logging.getLogger("lakehouse.gc")

SWEPT_PREFIXES = keys.GC_SWEPT


@dataclass
class GcReport:
    scanned: int = 0
    referenced: int = 0
    deleted: list[str] = field(default_factory=list)
    kept_young: int = 0
    truncated: bool = False
    dropped_revisions: dict[str, list[int]] = field(default_factory=dict)


def object_keys(m: Manifest) -> set[str]:
    return {o.key for o in m.stored}


async def retained(nc: NATS, keep: int) -> tuple[set[str], dict[str, list[Manifest]]]:
    """Keys of the last ``keep`` revisions of every dataset, and each dataset's older ones."""
    keys: set[str] = set()
    older: dict[str, list[Manifest]] = {}
    for name, entry in (await catalog.current(nc.jetstream())).items():
        if entry.event.type != "registered":
            continue
        found = await catalog.revisions(nc, name)
        for m in found[-keep:]:
            keys |= object_keys(m)
        older[name] = found[:-keep]
    return keys, older


async def sweep(
    nc: NATS, storage: Storage, grace: float, *, keep_revisions: int, dry_run: bool = False
) -> GcReport:
    report = GcReport()
    # Read the references *after* listing: an object registered meanwhile is then referenced.
    listings = [await storage.list(prefix) for prefix in SWEPT_PREFIXES]
    keep, older = await retained(nc, keep_revisions)
    cutoff = datetime.now(UTC) - timedelta(seconds=grace)
    for listing in listings:
        report.truncated |= listing.truncated
        for obj in listing.objects:
            report.scanned += 1
            if obj.key in keep:
                report.referenced += 1
            elif obj.modified > cutoff:
                report.kept_young += 1
            else:
                if not dry_run:
                    await storage.delete(obj.key)
                report.deleted.append(obj.key)
    gone = set(report.deleted)
    for name, manifests in older.items():
        dropped = [m.revision for m in manifests if object_keys(m) & gone]
        if dropped:
            report.dropped_revisions[name] = dropped
    log.info(
        "gc sweep",
        extra={
            "scanned": report.scanned,
            "deleted": len(report.deleted),
            "kept_young": report.kept_young,
            "dropped_revisions": report.dropped_revisions,
            "dry_run": dry_run,
        },
    )
    return report
