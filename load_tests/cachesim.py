"""Cache policies replayed on a request trace: the mesh's own rules next to
plain LRU, a static popularity cache, and offline optima.

Why it exists: the mesh keeps many more models registered than fit in its
runtimes, so whether a request finds its model loaded (a hit, about a
millisecond) or waits for a load (hundreds of milliseconds to seconds) is the
number that matters most for its users, and it depends on the eviction
policy. This module answers "how far is the mesh from the best possible?" on
synthetic Zipf traces, without any server: the mesh's side drives
:func:`mesh.core.eviction.plan_room`, the very function the node's cache manager
calls, with :class:`mesh.core.eviction.Entry` values built as the manager builds them
(size floored at ``min_model_size_bytes``, ``last_used`` the time of the last
request, nothing pinned because a trace replays one request at a time, no
extra copies because there is one node).

Every policy here is *demand paging*, as a serving node is: a request can be
answered only by a loaded model, so a miss always loads the model asked for,
evicting others until it fits; a model larger than the whole capacity is a
miss that loads nothing (the node refuses it). All start empty, and every
request of the trace counts.

* ``mesh``: :func:`mesh.core.eviction.plan_room` with popularities kept by
  :func:`mesh.core.eviction.bumped` and bounded by idle time
  (:func:`mesh.core.eviction.current`), as the node keeps them (fewest recent
  requests per byte first, stop as soon as the model fits). A trace has no
  clock: the mesh's side takes one request per second, so the half-life is
  given in requests (:data:`HALF_LIFE_REQUESTS`: the node's default
  half-life at an assumed 10 requests per second).
* ``mesh_lru``: the same with ``MESHSERVE_EVICTION=lru`` (no popularity:
  least recently used first).
* ``lru``: a plain LRU written here independently (an ordered dict).
* ``static``: the most popular models of the trace (counted on the trace
  itself: an oracle) stay once loaded; every other model is loaded into the
  room left beside them and leaves when the next one needs it (so the kept
  set leaves room for the largest model it does not hold; see
  :func:`static_set`).
* ``belady``: Belady's MIN, evicting the model whose next request is furthest
  away. With equal sizes it is the exact optimum. With variable sizes the
  optimum is NP-hard; this, and ``belady_size`` (evict the largest
  size × time-to-next-request, the usual size-aware variant, as in Berger et
  al., SIGMETRICS 2018), are the standard approximations. Both are feasible
  offline schedules, so the better of the two (``offline``) is a *lower*
  bound on the true optimum: a policy's ratio to it flatters the policy a
  little, never the reverse.
* ``gdsf``: Greedy-Dual-Size-Frequency, a classic online size-aware policy,
  as a reference for what an online policy can reach (not the mesh's).

Pure: functions of arrays and frozen values, no I/O.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from load_tests import workload
from mesh.core import errors, eviction, settings

Ints = npt.NDArray[np.int64]
MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_MODEL_BYTES = settings.CacheSettings().min_model_size_bytes
"""The node's default floor on a model's size (the mesh's side applies it)."""
ASSUMED_REQUESTS_PER_SECOND = 10.0
"""What a trace position is worth in time when the node's half-life is
turned into requests."""
HALF_LIFE_REQUESTS = (
    settings.CacheSettings().popularity_half_life_seconds * ASSUMED_REQUESTS_PER_SECOND
)


@dataclasses.dataclass(frozen=True)
class SizeModel:
    """Model sizes, log-normal and clipped.

    The default (median 64 MiB, σ 1.5 in log space, clipped to 1 MiB to
    4 GiB: 90 % of models between 5 MiB and 750 MiB) stands for a mixed
    model-serving fleet: small scikit-learn and XGBoost models beside vision and language
    models in the hundreds of MB. Sizes of model files in public model
    registries are roughly log-normal over several orders of magnitude; the
    exact figures are an assumption, stated with every result. At 5 % of
    the total size of 1,000 such models a node holds two of the largest."""

    median_bytes: int = 64 * MiB
    sigma: float = 1.5
    min_bytes: int = MIN_MODEL_BYTES
    max_bytes: int = 4 * GiB


def model_sizes(n: int, model: SizeModel, seed: int) -> Ints:
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(math.log(model.median_bytes), model.sigma, size=n)
    return np.clip(raw, model.min_bytes, model.max_bytes).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one policy did on one trace."""

    policy: str
    requests: int
    hits: int
    loaded_bytes: int
    """Bytes loaded by misses: what the runtimes had to read and build."""
    refused: int = 0
    """Requests for a model larger than the whole capacity."""

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


def next_uses(trace: Ints) -> Ints:
    """For each position, the position of the same model's next request
    (``len(trace)`` when there is none)."""
    n = len(trace)
    out = np.full(n, n, dtype=np.int64)
    last: dict[int, int] = {}
    for t in range(n - 1, -1, -1):
        m = int(trace[t])
        out[t] = last.get(m, n)
        last[m] = t
    return out


def mesh_policy(
    trace: Ints, sizes: Ints, capacity: int, half_life: float | None = HALF_LIFE_REQUESTS
) -> Outcome:
    """The node's rules: :func:`mesh.core.eviction.plan_room` on every miss, over
    popularities kept as the node keeps them (every request bumps its
    model's, at time = its position in the trace); ``half_life=None`` is
    ``MESHSERVE_EVICTION=lru`` (no popularity)."""
    names = [str(i) for i in range(len(sizes))]
    held: dict[str, eviction.Entry] = {}
    popularity: dict[str, float] = {}
    hits = loaded = refused = 0
    for t, m in enumerate(trace.tolist()):
        name = names[m]
        pop = eviction.UNKNOWN
        if half_life is not None:
            pop = popularity[name] = eviction.bumped(
                popularity.get(name, eviction.UNKNOWN), float(t), half_life
            )
        e = held.get(name)
        if e is not None:
            hits += 1
            held[name] = eviction.Entry(name, e.size_bytes, float(t), popularity=pop)
            continue
        size = max(int(sizes[m]), MIN_MODEL_BYTES)
        try:
            plan = eviction.plan_room(_as_now(held.values(), float(t), half_life), capacity, size)
        except errors.InsufficientCapacity:
            refused += 1
            continue
        for victim in plan.evict:
            del held[victim]
        held[name] = eviction.Entry(name, size, float(t), popularity=pop)
        loaded += size
    return Outcome(
        "mesh" if half_life is not None else "mesh_lru", len(trace), hits, loaded, refused
    )


def _as_now(
    entries: Iterable[eviction.Entry], now: float, half_life: float | None
) -> list[eviction.Entry]:
    """The entries as the node hands them to the rule at ``now``
    (popularities bounded by idle time: :func:`mesh.core.eviction.current`)."""
    if half_life is None:
        return list(entries)
    return [
        dataclasses.replace(
            e, popularity=eviction.current(e.popularity, e.last_used, now, half_life)
        )
        for e in entries
    ]


def mesh_lru_policy(trace: Ints, sizes: Ints, capacity: int) -> Outcome:
    """The node with ``MESHSERVE_EVICTION=lru``."""
    return mesh_policy(trace, sizes, capacity, None)


def lru_policy(trace: Ints, sizes: Ints, capacity: int) -> Outcome:
    """Plain LRU: evict the least recently used until the new model fits."""
    held: collections.OrderedDict[int, int] = collections.OrderedDict()
    used = hits = loaded = refused = 0
    for m in trace.tolist():
        if m in held:
            hits += 1
            held.move_to_end(m)
            continue
        size = int(sizes[m])
        if size > capacity:
            refused += 1
            continue
        while used + size > capacity:
            _, freed = held.popitem(last=False)
            used -= freed
        held[m] = size
        used += size
        loaded += size
    return Outcome("lru", len(trace), hits, loaded, refused)


def static_set(trace: Ints, sizes: Ints, capacity: int) -> set[int]:
    """The models the static policy keeps: the most requested first (ties:
    lower index), each if it still fits, in the capacity less a room for the
    others to take turns in. That room is as large as the largest model
    asked for that is not kept; of the rooms that allow it, the one whose
    kept models get the most requests wins."""
    counts = np.bincount(trace, minlength=len(sizes))
    asked = [m for m in sorted(range(len(sizes)), key=lambda i: (-counts[i], i)) if counts[m]]
    best: tuple[int, set[int]] = (-1, set())
    for room in sorted({int(sizes[m]) for m in asked if sizes[m] <= capacity}):
        keep: set[int] = set()
        used = 0
        for m in asked:
            if used + int(sizes[m]) <= capacity - room:
                keep.add(m)
                used += int(sizes[m])
        outside = max(
            (int(sizes[m]) for m in asked if m not in keep and sizes[m] <= capacity), default=0
        )
        served = int(sum(counts[m] for m in keep))
        if outside <= room and served > best[0]:
            best = (served, keep)
    return best[1]


def static_policy(trace: Ints, sizes: Ints, capacity: int) -> Outcome:
    """The most popular models stay once loaded; the others take turns in
    the room left beside them."""
    keep = static_set(trace, sizes, capacity)
    loaded_keep: set[int] = set()
    transient = -1
    hits = loaded = refused = 0
    for m in trace.tolist():
        if m in loaded_keep or m == transient:
            hits += 1
            continue
        size = int(sizes[m])
        if size > capacity:
            refused += 1
            continue
        loaded += size
        if m in keep:
            loaded_keep.add(m)
        else:
            transient = m
    return Outcome("static", len(trace), hits, loaded, refused)


def belady_policy(trace: Ints, sizes: Ints, capacity: int) -> Outcome:
    """Belady's MIN: evict the model asked for again furthest in the future
    (never again first), until the new model fits."""
    nxt = next_uses(trace)
    held: dict[int, int] = {}  # model -> position of its next request
    heap: list[tuple[int, int]] = []  # (-next request, model), stale entries skipped
    used = hits = loaded = refused = 0
    for t, m in enumerate(trace.tolist()):
        n = int(nxt[t])
        if m in held:
            hits += 1
        else:
            size = int(sizes[m])
            if size > capacity:
                refused += 1
                continue
            while used + size > capacity:
                neg, v = heapq.heappop(heap)
                if held.get(v) == -neg:
                    del held[v]
                    used -= int(sizes[v])
            used += size
            loaded += size
        held[m] = n
        heapq.heappush(heap, (-n, m))
    return Outcome("belady", len(trace), hits, loaded, refused)


def belady_size_policy(trace: Ints, sizes: Ints, capacity: int) -> Outcome:
    """Size-aware Belady: evict the largest size × time to its next request
    (models never asked for again count as twice the trace away)."""
    nxt = next_uses(trace)
    never = 2 * len(trace)
    n_models = len(sizes)
    fsizes = sizes.astype(np.float64)
    next_of = np.zeros(n_models, dtype=np.float64)
    cached = np.zeros(n_models, dtype=bool)
    used = hits = loaded = refused = 0
    for t, m in enumerate(trace.tolist()):
        n = int(nxt[t])
        if cached[m]:
            hits += 1
        else:
            size = int(sizes[m])
            if size > capacity:
                refused += 1
                continue
            while used + size > capacity:
                score = np.where(cached, fsizes * (next_of - t), -1.0)
                v = int(np.argmax(score))
                cached[v] = False
                used -= int(sizes[v])
            cached[m] = True
            used += size
            loaded += size
        next_of[m] = n if n < len(trace) else never
    return Outcome("belady_size", len(trace), hits, loaded, refused)


def gdsf_policy(trace: Ints, sizes: Ints, capacity: int) -> Outcome:
    """Greedy-Dual-Size-Frequency with unit cost: priority L + hits / size
    (MiB); evict the lowest, and L becomes its priority."""
    held: dict[int, float] = {}  # model -> priority
    freq: dict[int, int] = {}
    heap: list[tuple[float, int]] = []
    clock = 0.0
    used = hits = loaded = refused = 0
    for m in trace.tolist():
        size = int(sizes[m])
        if m in held:
            hits += 1
            freq[m] += 1
        else:
            if size > capacity:
                refused += 1
                continue
            while used + size > capacity:
                pri, v = heapq.heappop(heap)
                if held.get(v) == pri:
                    del held[v], freq[v]
                    used -= int(sizes[v])
                    clock = pri
            freq[m] = 1
            used += size
            loaded += size
        held[m] = clock + freq[m] / (size / MiB)
        heapq.heappush(heap, (held[m], m))
    return Outcome("gdsf", len(trace), hits, loaded, refused)


Policy = Callable[[Ints, Ints, int], Outcome]
POLICIES: dict[str, Policy] = {
    "mesh": mesh_policy,
    "mesh_lru": mesh_lru_policy,
    "lru": lru_policy,
    "static": static_policy,
    "belady": belady_policy,
    "belady_size": belady_size_policy,
    "gdsf": gdsf_policy,
}
OFFLINE = ("belady", "belady_size")


def run_all(trace: Ints, sizes: Ints, capacity: int) -> dict[str, Outcome]:
    """Every policy on the same trace and capacity."""
    return {name: policy(trace, sizes, capacity) for name, policy in POLICIES.items()}


def offline_best(outcomes: dict[str, Outcome]) -> Outcome:
    """The better of the offline schedules (a lower bound on the optimum)."""
    return max((outcomes[k] for k in OFFLINE), key=lambda o: o.hits)


def optimum(trace: Sequence[int], sizes: Sequence[int], capacity: int) -> int:
    """The exact most hits any demand-paging cache can get (exhaustive
    search: tiny traces only, for checking the approximations)."""
    memo: dict[tuple[int, frozenset[int]], int] = {}

    def best(t: int, held: frozenset[int]) -> int:
        if t == len(trace):
            return 0
        key = (t, held)
        if key in memo:
            return memo[key]
        m = trace[t]
        if m in held:
            out = 1 + best(t + 1, held)
        elif sizes[m] > capacity:
            out = best(t + 1, held)
        else:
            out = 0
            members = sorted(held)
            for mask in range(1 << len(members)):
                keep = frozenset(x for i, x in enumerate(members) if mask >> i & 1)
                if sum(sizes[x] for x in keep) + sizes[m] <= capacity:
                    out = max(out, best(t + 1, keep | {m}))
        memo[key] = out
        return out

    return best(0, frozenset())


def zipf_trace(n_models: int, alpha: float, requests: int, seed: int) -> Ints:
    """Model indices of ``requests`` requests, Zipf(α) over ``n_models``."""
    return workload.zipf_models(workload.Zipf(n_models, alpha), requests, seed)


def shifted(trace: Ints, n_models: int, period: int, seed: int) -> Ints:
    """``trace`` with popularity reshuffled every ``period`` requests: each
    stretch maps model indices through a fresh random permutation, so the
    favourites of one stretch are ordinary models in the next. The harshest
    case for a policy that remembers popularity."""
    rng = np.random.default_rng(seed)
    out = trace.copy()
    for start in range(0, len(trace), period):
        out[start : start + period] = rng.permutation(n_models)[trace[start : start + period]]
    return out
