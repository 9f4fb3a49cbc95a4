"""The trace of the scenario "peers", and what offline caches would load on it.

Why it exists: the scenario (:mod:`load_tests.peers`) sends the very same
requests, at the very same times, to meshserve, to Ray Serve's model
multiplexing and to one runtime holding every model; for the comparison to
mean anything the trace must be a pure function of a seed, decided before
any server starts. And the loads each system paid mean more next to what an
offline cache would have paid on the same trace with the same room: one
LRU over all the cluster's slots, an LRU per node with every model always
sent to the same node (perfect affinity: the best a router that hashes
models to nodes can do with LRU), and Belady's MIN over all the slots (the
fewest loads any cache of that room can make: a per-node schedule is one
of the schedules of the pooled room, so Belady bounds them all).

Every model counts as one slot (the scenario gives each node room for a
fixed number of models), so Belady is the exact optimum here. A trace has
an untimed warm-up first: the references replay it too (every cache starts
empty) and count only the loads of the measured part, as the systems do.

Pure: functions of frozen values and a seed, no I/O.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import zlib
from collections.abc import Sequence

import numpy as np

from load_tests import workload


@dataclasses.dataclass(frozen=True)
class Shape:
    """How a trace's requests arrive and what they ask for."""

    name: str
    alpha: float
    """Zipf popularity exponent over the models."""
    cv: float
    """Coefficient of variation of the gaps: 1 Poisson, above 1 bursty (Gamma)."""


SHAPES = (
    Shape("zipf-0.8", 0.8, 1.0),
    Shape("zipf-1.2", 1.2, 1.0),
    Shape("bursty", 1.0, 4.0),
)
"""Zipf α 0.8 and 1.2 with Poisson arrivals, and Zipf α 1.0 with Gamma gaps
of CV 4 (bursts)."""


@dataclasses.dataclass(frozen=True)
class PeerTrace:
    """One trace: send times (seconds from its start) and model indices,
    the first ``warmup`` of them untimed."""

    shape: Shape
    rate_per_s: float
    offsets_s: tuple[float, ...]
    picks: tuple[int, ...]
    warmup: int
    """Requests of the warm-up (those sent before ``warmup_s``)."""
    warmup_s: float

    def __post_init__(self) -> None:
        if len(self.offsets_s) != len(self.picks):
            raise ValueError("a trace needs one model per send time")
        if not 0 <= self.warmup <= len(self.picks):
            raise ValueError("the warm-up must be a part of the trace")

    def measured(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """Send times (from the end of the warm-up) and picks of the timed part."""
        w = self.warmup
        return tuple(t - self.warmup_s for t in self.offsets_s[w:]), self.picks[w:]

    def warm(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """Send times and picks of the warm-up."""
        return self.offsets_s[: self.warmup], self.picks[: self.warmup]


def trace_seed(seed: int, shape: Shape, rate_per_s: float) -> int:
    """The seed of one (shape, rate) point: the same for every system."""
    return seed + zlib.crc32(f"{shape.name}@{rate_per_s:g}".encode()) % 100_000


def build(
    shape: Shape, rate_per_s: float, models: int, warmup_s: float, measured_s: float, seed: int
) -> PeerTrace:
    """The trace of one point: ``warmup_s`` then ``measured_s`` seconds of
    requests at ``rate_per_s`` with ``shape``'s gaps and popularity."""
    s = trace_seed(seed, shape, rate_per_s)
    times = workload.schedule_for(workload.Arrivals(rate_per_s, shape.cv), warmup_s + measured_s, s)
    picks = workload.zipf_models(workload.Zipf(models, shape.alpha), len(times), s + 1)
    warmup = int(np.searchsorted(times, warmup_s, side="left"))
    return PeerTrace(
        shape,
        rate_per_s,
        tuple(float(t) for t in times),
        tuple(int(p) for p in picks),
        warmup,
        warmup_s,
    )


def fitted_alpha(picks: Sequence[int], models: int) -> float:
    """Zipf α estimated from a trace: minus the slope of log(count) against
    log(rank), ranks by observed count, over the models asked for at least
    twice (the rarest are all noise)."""
    counts = np.sort(np.bincount(np.asarray(picks, dtype=np.int64), minlength=models))[::-1]
    ranks = np.arange(1, len(counts) + 1, dtype=np.float64)
    keep = counts >= 2
    if keep.sum() < 2:
        return 0.0
    slope = np.polyfit(np.log(ranks[keep]), np.log(counts[keep].astype(np.float64)), 1)[0]
    return round(-float(slope), 3)


def shape_stats(t: PeerTrace, models: int) -> dict[str, float]:
    """What the trace really holds: rate, CV of the gaps, fitted α, counts."""
    offsets = np.asarray(t.offsets_s, dtype=np.float64)
    rate, cv = workload.gap_stats(offsets) if len(offsets) > 1 else (0.0, 0.0)
    return {
        "requests": len(t.picks),
        "warmup_requests": t.warmup,
        "measured_requests": len(t.picks) - t.warmup,
        "rate_per_s": round(rate, 2),
        "cv": round(cv, 2),
        "alpha_fitted": fitted_alpha(t.picks, models),
        "distinct_models": len(set(t.picks)),
    }


def lru_misses(picks: Sequence[int], slots: int) -> list[bool]:
    """Per request, whether an LRU of ``slots`` equal models had to load it."""
    held: collections.OrderedDict[int, None] = collections.OrderedDict()
    out = []
    for m in picks:
        if m in held:
            held.move_to_end(m)
            out.append(False)
            continue
        if len(held) >= slots:
            held.popitem(last=False)
        held[m] = None
        out.append(True)
    return out


def belady_misses(picks: Sequence[int], slots: int) -> list[bool]:
    """Per request, whether Belady's MIN (evict the model asked for again
    furthest ahead) with ``slots`` equal models had to load it: the fewest
    loads of any cache of that many slots."""
    n = len(picks)
    nxt = [n] * n
    last: dict[int, int] = {}
    for t in range(n - 1, -1, -1):
        nxt[t] = last.get(picks[t], n + picks[t])  # never again: ordered, but after all
        last[picks[t]] = t
    held: dict[int, int] = {}  # model -> its next request
    heap: list[tuple[int, int]] = []  # (-next request, model); stale entries skipped
    out = []
    for t, m in enumerate(picks):
        hit = m in held
        if not hit and len(held) >= slots:
            while True:
                neg, v = heapq.heappop(heap)
                if held.get(v) == -neg:
                    del held[v]
                    break
        held[m] = nxt[t]
        heapq.heappush(heap, (-nxt[t], m))
        out.append(not hit)
    return out


def home_node(name: str, nodes: int) -> int:
    """The node a model is always sent to under perfect affinity (a stable hash)."""
    return zlib.crc32(name.encode()) % nodes


def affinity_misses(
    picks: Sequence[int], names: Sequence[str], nodes: int, slots_per_node: int
) -> list[bool]:
    """Per request, whether it loaded under perfect affinity: every model
    always on its :func:`home_node`, an LRU of ``slots_per_node`` per node."""
    homes = [home_node(n, nodes) for n in names]
    per_node: list[list[int]] = [[] for _ in range(nodes)]
    where: list[tuple[int, int]] = []
    for m in picks:
        h = homes[m]
        where.append((h, len(per_node[h])))
        per_node[h].append(m)
    misses = [lru_misses(p, slots_per_node) for p in per_node]
    return [misses[h][i] for h, i in where]


def per_100(misses: Sequence[bool], warmup: int) -> float:
    """Loads per 100 requests of the measured part (after ``warmup``)."""
    measured = misses[warmup:]
    return round(100.0 * sum(measured) / len(measured), 2) if measured else 0.0


def references(
    t: PeerTrace, names: Sequence[str], nodes: int, slots_per_node: int
) -> dict[str, float]:
    """Loads per 100 measured requests of the offline references on ``t``,
    every cache starting empty at the start of the warm-up."""
    pooled = nodes * slots_per_node
    return {
        "lru_cluster": per_100(lru_misses(t.picks, pooled), t.warmup),
        "lru_affinity": per_100(affinity_misses(t.picks, names, nodes, slots_per_node), t.warmup),
        "belady": per_100(belady_misses(t.picks, pooled), t.warmup),
    }


def loads_per_100(loads: float, requests: int) -> float:
    """A system's loads per 100 requests (0 with no requests)."""
    return round(100.0 * loads / requests, 2) if requests > 0 else 0.0


def fraction_in_top(picks: Sequence[int], slots: int) -> float:
    """Share of requests for the ``slots`` most asked-for models of the trace."""
    if not picks:
        return 0.0
    counts = sorted(collections.Counter(picks).values(), reverse=True)
    return round(sum(counts[:slots]) / len(picks), 3)
