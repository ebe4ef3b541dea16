"""Fault points for the crash matrix: a named spot in a handler where a test makes the process
die (``kill``: SIGKILL itself, as a power cut would) or fail on chosen inputs.

Configured per process through ``Settings.faults`` (``LAKEHOUSE_FAULTS='{"point": "kill"}'``);
empty by default, and then every call here is a dictionary lookup.

Points: ``catalog.before_publish`` (objects written, event not yet published),
``catalog.after_publish`` (event published, ``_catalog`` mirror not yet written),
``ingest.upsert.before_register`` (an upsert's data object and delete set stored, not yet
registered), ``catalog.compact.before_register`` (the compacted object stored, not yet
registered),
``vectors.mid_snapshot`` (graph uploaded, pointer not yet written),
``embed.fail_on`` (action = a substring: the model raises on texts containing it).
"""

from __future__ import annotations

import logging
import os
import signal

from lakehouse.platform.config import Settings

log = logging.getLogger("lakehouse.faults")


def point(settings: Settings, name: str) -> None:
    """Die here when ``name`` is configured with ``kill``."""
    if settings.faults.get(name) == "kill":
        log.warning("fault point reached: killing this process", extra={"point": name})
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def fail_on(settings: Settings, texts: list[str]) -> None:
    """Raise like a model that cannot embed some inputs (``embed.fail_on``)."""
    marker = settings.faults.get("embed.fail_on")
    if marker:
        for text in texts:
            if marker in text:
                raise ValueError(f"the model cannot embed this input (contains {marker!r})")
