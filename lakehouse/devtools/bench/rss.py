"""Peak resident memory of some processes while a workload runs."""

from __future__ import annotations

import threading

import psutil


class PeakRss:
    """Samples the summed RSS of some processes every ``every`` seconds until stopped."""

    def __init__(self, pids: list[int], every: float = 0.02) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.every = every
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        total = 0
        for p in self.procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())
