"""Heavy libraries imported on first use, for modules the gateway shares with the workers.

pyarrow (~40 MiB resident, ~0.3 s to import) and duckdb (~25 MiB, ~0.25 s) serve the gateway
only for some requests (filtered search, scoped SQL keys, exports, vector uploads); importing
them at start made an idle gateway 178 MiB. A module that the gateway imports writes::

    if TYPE_CHECKING:
        import pyarrow as pa
    else:
        pa = lazy.module("pyarrow")

and reads ``pa.x`` as usual: the first attribute read imports the library, and the proxy then
holds the library's names itself, so later reads cost what a module's do. A request handler
that is about to need one awaits :func:`loaded` first, so the import runs in a thread and does
not stall the event loop for everyone else.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from types import ModuleType
from typing import Any

_lock = threading.Lock()


class Deferred(ModuleType):
    """Stands in for the module ``name`` until an attribute is read."""

    def __getattr__(self, attr: str) -> Any:
        # Called only for names not in this object's __dict__: before the import, and for a
        # name the library set after it (a submodule imported later) or lacks.
        with _lock:
            real = self.__dict__.get("_real")
            if real is None:
                real = importlib.import_module(self.__name__)
                self.__dict__.update({k: v for k, v in vars(real).items() if k != "__name__"})
                self.__dict__["_real"] = real
        value = getattr(real, attr)
        self.__dict__[attr] = value
        return value


def module(name: str) -> ModuleType:
    """``name`` (``"pyarrow"``, ``"pyarrow.compute"``), imported when first used."""
    return Deferred(name)


async def loaded(*names: str) -> None:
    """Import ``names`` in a worker thread unless they already are (once per process)."""
    missing = [name for name in names if name not in sys.modules]
    if missing:
        await asyncio.to_thread(lambda: [importlib.import_module(name) for name in missing])
