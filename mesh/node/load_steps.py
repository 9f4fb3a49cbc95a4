"""Where the time of one load goes: claim, pull, room, runtime load, record.

A cache miss is only as cheap as its slowest step, and the steps are only
worth cutting if they are measured where they run. The cache manager marks
the end of each step of a load on a :class:`LoadSteps`, logs the split in
its "loaded in" line, and hands it to the metrics
(``meshserve_load_step_milliseconds``), which ``load_tests``' ``cold``
scenario reads to split a disk reload into steps.
"""

from __future__ import annotations

import time

STEPS = ("claim", "pull", "room", "load", "record")
"""The steps of a load, in order: the claim in etcd, the pull (or the disk
tier's restore), making room in memory, the runtime's load (with writing
its config and reading its memory), and recording the loaded copy."""


class LoadSteps:
    """Monotonic marks at the end of each step of one load."""

    __slots__ = ("_last", "ms", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._last = self.started
        self.ms: dict[str, float] = {}
        """Milliseconds of each step marked so far."""

    def mark(self, step: str) -> None:
        """``step`` ended now: it took the time since the previous mark."""
        now = time.monotonic()
        self.ms[step] = self.ms.get(step, 0.0) + (now - self._last) * 1000
        self._last = now

    def total_ms(self) -> float:
        return (self._last - self.started) * 1000

    def summary(self) -> str:
        """``claim 1.2, pull 3.4, ...`` (ms, in step order)."""
        return ", ".join(f"{s} {self.ms[s]:.1f}" for s in STEPS if s in self.ms)
