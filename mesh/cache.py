"""The node's cache rules: which loaded models to evict to make room.

A node holds models up to its capacity in bytes. Making room for a new model
evicts extra copies first (models another node also holds), then the least
recently used models, and stops as soon as enough bytes are free. A model that is loading,
or serving a request right now, is never evicted. If the room cannot be made
even by evicting everything evictable, nothing is evicted and
:class:`mesh.errors.InsufficientCapacity` says why.

Pure functions over frozen values: the cache manager feeds them its state and
carries out the plan. Also used by ``load_tests`` to compare the policy with
others on synthetic traces.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from mesh import errors


@dataclasses.dataclass(frozen=True)
class Entry:
    """One model held (or being loaded) on this node."""

    model_id: str
    size_bytes: int
    """Bytes it takes (predicted while loading, measured once loaded)."""
    last_used: float
    """When it last served (any monotonic or wall clock, one per cache)."""
    pinned: bool = False
    """Loading, or serving an in-flight request: may not be evicted."""
    extra: bool = False
    """Another node holds a ready copy too, beyond the model's minimum:
    evicting this one costs little, so it goes first."""


@dataclasses.dataclass(frozen=True)
class EvictionPlan:
    """What to evict, oldest first, and the bytes that frees."""

    evict: tuple[str, ...]
    freed_bytes: int


def used_bytes(entries: Iterable[Entry]) -> int:
    return sum(e.size_bytes for e in entries)


def plan_room(entries: Iterable[Entry], capacity_bytes: int, needed_bytes: int) -> EvictionPlan:
    """The least recently used unpinned entries to evict so that
    ``needed_bytes`` more fit in ``capacity_bytes``.

    Raises :class:`mesh.errors.InsufficientCapacity` if the model is larger
    than the whole capacity, or if pinned models leave too little room.
    """
    entries = list(entries)
    if needed_bytes > capacity_bytes:
        raise errors.InsufficientCapacity(
            f"needs {needed_bytes} bytes but the node's capacity is {capacity_bytes} bytes"
        )
    free = capacity_bytes - used_bytes(entries)
    if needed_bytes <= free:
        return EvictionPlan((), 0)
    candidates = sorted(
        (e for e in entries if not e.pinned), key=lambda e: (not e.extra, e.last_used)
    )
    evict: list[str] = []
    freed = 0
    for e in candidates:
        if free + freed >= needed_bytes:
            break
        evict.append(e.model_id)
        freed += e.size_bytes
    if free + freed < needed_bytes:
        pinned = sum(e.size_bytes for e in entries if e.pinned)
        raise errors.InsufficientCapacity(
            f"needs {needed_bytes} bytes; {free} are free and models in use or loading "
            f"hold {pinned} of the node's {capacity_bytes} bytes"
        )
    return EvictionPlan(tuple(evict), freed)


def lru_time(entries: Iterable[Entry]) -> float:
    """Last use of the least recently used entry (0 when empty)."""
    return min((e.last_used for e in entries), default=0.0)


def predicted_size(disk_bytes: int, multiplier: float, minimum: int) -> int:
    """A model's size before its first load: bytes on disk × multiplier,
    never below ``minimum``."""
    return max(minimum, math.ceil(disk_bytes * multiplier))


def corrected_size(predicted: int, measured: int | None, minimum: int) -> int:
    """The size to account for after a load: the larger of the prediction and
    the measured growth of the runtime's memory (when there is one), never
    below ``minimum``.

    The measurement corrects the prediction upward when a model takes more
    memory than its file (compressed files, structures built at load time).
    It is not trusted downward: a process's RSS undercounts when a load reuses
    memory an earlier unload freed (seen: a 1.2 MB forest grew MLServer's RSS
    by 4.4 MB when first loaded and by 2.0 MB when loaded again), and an
    undercount lets the cache overfill the runtime, while an overcount only
    costs some room.
    """
    return max(minimum, predicted, measured or 0)
