"""What a load test sends, and when: arrival schedules, model popularity and
replayed traces.

Why it exists: an open-loop load test (``load_tests.loadgen``) sends each
request at a time fixed in advance, whether or not earlier ones have
answered, so that a slow server shows up as queueing in the latencies instead
of quietly slowing the client down (the "coordinated omission" of closed-loop
tools). Those times, and which model each request names, are decided here,
before any socket is opened: pure functions of frozen values and a seed, so a
run can be repeated exactly and the unit tests can check that a schedule has
the rate and burstiness that were asked for.

* :class:`Arrivals`: a mean rate and a coefficient of variation (CV) of the
  gaps between requests. CV 1 is a Poisson process (exponential gaps), CV 0 a
  metronome, CV above 1 bursts; every CV but 0 draws Gamma gaps with shape
  ``1/CV²`` (the exponential is the Gamma of shape 1).
* :class:`Zipf`: popularity over N models, the k-th most popular asked for
  with probability ∝ ``1/k^α`` (α 0 is uniform; real model traffic is usually
  put at α 0.8 to 1.2).
* :class:`Trace`: a sequence of (seconds from start, model name), synthetic
  or read back from a CSV file (``offset_seconds,model`` per line), so a
  recorded production pattern can be replayed.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclasses.dataclass(frozen=True)
class Arrivals:
    """When requests arrive: ``rate_per_s`` on average, gaps with CV ``cv``."""

    rate_per_s: float
    cv: float = 1.0
    """Coefficient of variation of the gaps (standard deviation / mean):
    1 Poisson, 0 evenly spaced, above 1 bursty."""

    def __post_init__(self) -> None:
        if not (self.rate_per_s > 0 and math.isfinite(self.rate_per_s)):
            raise ValueError(f"rate must be more than 0 requests a second, not {self.rate_per_s}")
        if not (self.cv >= 0 and math.isfinite(self.cv)):
            raise ValueError(f"cv must be 0 or more, not {self.cv}")

    @property
    def mean_gap_s(self) -> float:
        return 1.0 / self.rate_per_s


def gaps(arrivals: Arrivals, count: int, rng: np.random.Generator) -> Floats:
    """``count`` gaps (seconds) between consecutive requests."""
    if count < 0:
        raise ValueError("count must be 0 or more")
    mean = arrivals.mean_gap_s
    if arrivals.cv == 0:
        return np.full(count, mean, dtype=np.float64)
    shape = 1.0 / arrivals.cv**2
    return rng.gamma(shape, mean / shape, size=count).astype(np.float64)


def schedule(arrivals: Arrivals, count: int, seed: int) -> Floats:
    """Send times of ``count`` requests, seconds from the start (increasing;
    the first request comes one gap after the start)."""
    return np.cumsum(gaps(arrivals, count, np.random.default_rng(seed)))


def schedule_for(arrivals: Arrivals, duration_s: float, seed: int) -> Floats:
    """Send times of every request that falls within ``duration_s`` seconds."""
    if duration_s <= 0:
        return np.empty(0, dtype=np.float64)
    rng = np.random.default_rng(seed)
    expected = arrivals.rate_per_s * duration_s
    # Enough gaps that running out is astronomically unlikely; draw more if it happens.
    chunk = int(expected + 10 * math.sqrt(expected) * max(1.0, arrivals.cv) + 16)
    times = np.cumsum(gaps(arrivals, chunk, rng))
    while times[-1] < duration_s:
        times = np.concatenate([times, times[-1] + np.cumsum(gaps(arrivals, chunk, rng))])
    return times[times < duration_s]


def gap_stats(times: Floats) -> tuple[float, float]:
    """(rate per second, CV of the gaps) measured from send times."""
    g = np.diff(np.concatenate([[0.0], times]))
    mean = float(g.mean())
    return 1.0 / mean, float(g.std() / mean)


@dataclasses.dataclass(frozen=True)
class Zipf:
    """Popularity over ``n`` models: rank k (from 1) with probability ∝ 1/k^α."""

    n: int
    alpha: float

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"a Zipf popularity needs at least 1 model, not {self.n}")
        if not (self.alpha >= 0 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be 0 or more, not {self.alpha}")


def zipf_weights(z: Zipf) -> Floats:
    """Probability of each rank, most popular first (sums to 1)."""
    w: Floats = np.arange(1, z.n + 1, dtype=np.float64) ** -z.alpha
    out: Floats = w / w.sum()
    return out


def sample_ranks(z: Zipf, count: int, rng: np.random.Generator) -> Ints:
    """``count`` independent draws of a rank (0 = most popular)."""
    cdf = np.cumsum(zipf_weights(z))
    cdf[-1] = 1.0
    return np.searchsorted(cdf, rng.random(count), side="right").astype(np.int64)


def popularity_order(n: int, seed: int) -> Ints:
    """Which model (index) has each popularity rank: a seeded shuffle, so
    that popularity owes nothing to a model's index (nor to its size)."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def zipf_models(z: Zipf, count: int, seed: int) -> Ints:
    """Model indices of ``count`` requests drawn from ``z``, ranks shuffled
    over the indices by :func:`popularity_order`."""
    rng = np.random.default_rng(seed)
    order = popularity_order(z.n, seed + 1)
    return order[sample_ranks(z, count, rng)]


@dataclasses.dataclass(frozen=True)
class Trace:
    """Requests to replay: send time (seconds from start) and model name."""

    offsets_s: tuple[float, ...]
    models: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.offsets_s) != len(self.models):
            raise ValueError("a trace needs one model per send time")
        if any(b < a for a, b in zip(self.offsets_s, self.offsets_s[1:], strict=False)):
            raise ValueError("a trace's send times must not decrease")
        if self.offsets_s and self.offsets_s[0] < 0:
            raise ValueError("a trace's send times must be 0 or more")

    def __len__(self) -> int:
        return len(self.models)

    def names(self) -> tuple[str, ...]:
        """Distinct model names, in order of first appearance."""
        return tuple(dict.fromkeys(self.models))


def synthetic_trace(
    arrivals: Arrivals, popularity: Zipf, names: Sequence[str], count: int, seed: int
) -> Trace:
    """``count`` requests: times from ``arrivals``, models from ``popularity``
    over ``names`` (one name per model)."""
    if len(names) != popularity.n:
        raise ValueError(f"{len(names)} names for a popularity over {popularity.n} models")
    times = schedule(arrivals, count, seed)
    picks = zipf_models(popularity, count, seed + 7)
    return Trace(tuple(float(t) for t in times), tuple(names[i] for i in picks))


def read_trace(path: pathlib.Path) -> Trace:
    """A trace from a CSV file of ``offset_seconds,model`` lines (a header line
    and lines starting with ``#`` are skipped)."""
    offsets: list[float] = []
    models: list[str] = []
    with path.open(newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{lineno}: expected offset_seconds,model")
            try:
                offsets.append(float(row[0]))
            except ValueError:
                if lineno == 1:  # a header
                    continue
                raise ValueError(f"{path}:{lineno}: {row[0]!r} is not seconds") from None
            models.append(row[1].strip())
    return Trace(tuple(offsets), tuple(models))


def write_trace(trace: Trace, path: pathlib.Path) -> None:
    """Write ``trace`` in the format :func:`read_trace` reads."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["offset_seconds", "model"])
        for t, m in zip(trace.offsets_s, trace.models, strict=True):
            w.writerow([repr(t), m])
