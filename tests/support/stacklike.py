"""What the crash matrix's helpers use of a running stack: a
:class:`~lakehouse.devtools.stack.Stack` (one machine) or one host of a cluster
(:meth:`lakehouse.devtools.cluster.Cluster.as_stack`)."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from lakehouse.platform.config import Settings


class StackLike(Protocol):
    @property
    def base(self) -> str: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def nats_url(self) -> str: ...

    def env(self) -> dict[str, str]: ...

    def cli(
        self, *argv: str, rc: int = 0, timeout: float = 120, env: dict[str, str] | None = None
    ) -> str: ...

    def client(self, timeout: float = 60) -> httpx.Client: ...

    def health(self) -> dict[str, Any] | None: ...

    def healthy(self, want: dict[str, int] | None = None) -> bool: ...
