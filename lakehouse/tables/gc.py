"""Orphan sweeper: delete data objects no manifest references, once older than a grace period.

Objects are immutable and written before they are registered, so a young unreferenced object
may belong to an ingest in flight; the grace period protects it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext

from lakehouse.platform.storage import Storage, keys
from lakehouse.tables import catalog

log = logging.getLogger("lakehouse.gc")

SWEPT_PREFIXES = keys.GC_SWEPT


@dataclass
class GcReport:
    scanned: int = 0
    referenced: int = 0
    deleted: list[str] = field(default_factory=list)
    kept_young: int = 0
    truncated: bool = False


async def referenced_keys(js: JetStreamContext) -> set[str]:
    keys: set[str] = set()
    for entry in (await catalog.current(js)).values():
        if entry.event.manifest is not None and entry.event.type == "registered":
            keys.update(o.key for o in entry.event.manifest.objects)
    return keys


async def sweep(
    js: JetStreamContext, storage: Storage, grace: float, *, dry_run: bool = False
) -> GcReport:
    report = GcReport()
    # Read the references *after* listing: an object registered meanwhile is then referenced.
    listings = [await storage.list(prefix) for prefix in SWEPT_PREFIXES]
    keep = await referenced_keys(js)
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
    log.info(
        "gc sweep",
        extra={
            "scanned": report.scanned,
            "deleted": len(report.deleted),
            "kept_young": report.kept_young,
            "dry_run": dry_run,
        },
    )
    return report
