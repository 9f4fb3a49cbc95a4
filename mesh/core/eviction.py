"""The node's cache rules: which loaded models to evict to make room.

A node holds models up to its capacity in bytes. Making room for a new model
evicts extra copies first (models another node also holds), then the models
with the fewest recent requests per byte, and stops as soon as enough bytes
are free. A model that is loading, or serving a request right now, is never
evicted.

Why requests per byte and not plain LRU (ModelMesh's rule): hits are counted
per request, so a node full of small popular models serves more from memory
than one that made room for a large rarely used one. LRU lets one request for
a large model push out many small popular ones. On Zipf traces over 1,000
models (``python -m load_tests cache``) LRU reaches 0.42-0.89 of the offline
optimum and this rule 0.87-0.97. A model's popularity is its request count
on this node with each request's weight halving every half-life,
remembered after an eviction (a model evicted and asked for again comes
back with its history), and bounded by its idle time (:func:`current`: a
favourite that stopped being asked for loses its rank in a few of its own
gaps, not a few half-lives).
Models never asked for here rank by last use alone, which is plain LRU: so
is the whole rule when every popularity is :data:`UNKNOWN`
(``MESHSERVE_EVICTION=lru``). If the room cannot be made
even by evicting everything evictable, nothing is evicted and
:class:`mesh.core.errors.InsufficientCapacity` says why.

Pure functions over frozen values: the cache manager feeds them its state and
carries out the plan. Also used by ``load_tests`` to compare the policy with
others on synthetic traces.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from mesh.core import errors

UNKNOWN = -math.inf
"""The popularity of a model never asked for (log2 of a count of 0)."""


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
    popularity: float = UNKNOWN
    """log2 of its decayed request count (see :func:`bumped`); models with
    fewer requests per byte are evicted first."""


@dataclasses.dataclass(frozen=True)
class EvictionPlan:
    """What to evict, in order, and the bytes that frees."""

    evict: tuple[str, ...]
    freed_bytes: int


def used_bytes(entries: Iterable[Entry]) -> int:
    return sum(e.size_bytes for e in entries)


def bumped(popularity: float, now_s: float, half_life_s: float) -> float:
    """A popularity after one more request at ``now_s``.

    A popularity is log2 of the sum, over the model's requests, of
    ``2 ** (t / half_life_s)``: a request counts twice as much as one a
    half-life earlier. Kept in log2 and with weights growing instead of
    counts decaying, no model's popularity ever has to be updated when time
    passes, only when it is asked for, and nothing overflows.
    """
    x = now_s / half_life_s
    if popularity == UNKNOWN:
        return x
    hi, lo = max(popularity, x), min(popularity, x)
    return hi + math.log2(1.0 + 2.0 ** (lo - hi))


IDLE_GAPS = 4.0
"""How many of a model's own mean gaps between requests it may sit idle
before its past popularity stops counting in full (see :func:`current`)."""


def current(popularity: float, last_used_s: float, now_s: float, half_life_s: float) -> float:
    """``popularity`` (see :func:`bumped`) as it stands at ``now_s`` for a
    model last asked for at ``last_used_s``: no more than that of a model
    asked for :data:`IDLE_GAPS` times over its idle time.

    A decayed count ``c`` stands for a request rate of ``c * ln 2 /
    half_life_s``; a model that has not been asked for in many of its own
    gaps has, most likely, lost its traffic, not had a pause. Without this
    bound yesterday's favourites hold their room for several half-lives
    after a shift (measured: with the previous hour's 16 hottest models on a
    2 × 8-slot cluster, 1.5-2 × the loads of plain LRU); with it they go once
    their idle time belies their rate, and a model in steady use is not
    touched (its idle time is about one gap)."""
    idle = now_s - last_used_s
    if popularity == UNKNOWN or idle <= 0:
        return popularity
    ceiling = now_s / half_life_s + math.log2(IDLE_GAPS * half_life_s / (math.log(2) * idle))
    return min(popularity, ceiling)


def value(e: Entry) -> float:
    """log2 of requests per byte: the eviction order (lowest first)."""
    return e.popularity - math.log2(max(e.size_bytes, 1))


def eviction_order(e: Entry) -> tuple[bool, float, float]:
    """Extra copies first, then fewest requests per byte, then least
    recently used."""
    return (not e.extra, value(e), e.last_used)


def first_victim(entries: Iterable[Entry]) -> Entry | None:
    """The unpinned entry :func:`plan_room` would evict first (``None``:
    every entry is pinned, or there is none)."""
    return min((e for e in entries if not e.pinned), key=eviction_order, default=None)


def victim_rank(e: Entry) -> float:
    """How dear evicting ``e`` is, comparable across nodes whose clocks
    agree: -inf for an extra copy (another node holds the model too), else
    :func:`value`. Placement loads a new copy on the node whose first
    victim ranks lowest, so the cluster evicts as one cache would."""
    return -math.inf if e.extra else value(e)


def plan_room(entries: Iterable[Entry], capacity_bytes: int, needed_bytes: int) -> EvictionPlan:
    """The unpinned entries to evict, first in :func:`eviction_order`, so that
    ``needed_bytes`` more fit in ``capacity_bytes``.

    Raises :class:`mesh.core.errors.InsufficientCapacity` if the model is larger
    than the whole capacity, and :class:`mesh.core.errors.NoRoomNow` if pinned
    models leave too little room for now.
    """
    entries = list(entries)
    if needed_bytes > capacity_bytes:
        raise errors.InsufficientCapacity(
            f"needs {needed_bytes} bytes but the node's capacity is {capacity_bytes} bytes"
        )
    free = capacity_bytes - used_bytes(entries)
    if needed_bytes <= free:
        return EvictionPlan((), 0)
    candidates = sorted((e for e in entries if not e.pinned), key=eviction_order)
    evict: list[str] = []
    freed = 0
    for e in candidates:
        if free + freed >= needed_bytes:
            break
        evict.append(e.model_id)
        freed += e.size_bytes
    if free + freed < needed_bytes:
        pinned = sum(e.size_bytes for e in entries if e.pinned)
        raise errors.NoRoomNow(
            f"needs {needed_bytes} bytes; {free} are free and models in use or loading "
            f"hold {pinned} of the node's {capacity_bytes} bytes"
        )
    return EvictionPlan(tuple(evict), freed)


def fits(entries: Iterable[Entry], capacity_bytes: int, needed_bytes: int) -> bool:
    """Whether :func:`plan_room` finds room for ``needed_bytes`` at all."""
    try:
        plan_room(entries, capacity_bytes, needed_bytes)
    except errors.InsufficientCapacity:
        return False
    return True


def churn_guarded(entries: list[Entry], threshold_s: float, now_s: float) -> list[Entry]:
    """``entries`` with those used within ``threshold_s`` of ``now_s``
    pinned (evicting them would thrash); ``entries`` itself when the
    threshold is off."""
    if threshold_s <= 0:
        return entries
    recent = now_s - threshold_s
    return [dataclasses.replace(e, pinned=True) if e.last_used > recent else e for e in entries]


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
