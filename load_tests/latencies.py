"""Latency distributions: HDR histograms and their summaries.

Why it exists: a load test records hundreds of thousands of latencies and
then asks for p99.9 and max; keeping every value, or averaging, is the wrong
tool. An HDR histogram (``hdrhistogram``, Gil Tene's design) keeps counts in
buckets of a bounded relative error (3 significant figures here: 0.1 %),
from 1 µs to 10 minutes, in a few tens of KB, and histograms of several runs
merge exactly. Values are recorded in whole microseconds.

:class:`Recorder` is the one mutable piece (the load generator records into
it); what leaves it is a frozen :class:`Summary` or a CDF as plain numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from hdrh import histogram  # type: ignore[import-untyped]

LOWEST_US = 1
HIGHEST_US = 600_000_000
"""Ten minutes: nothing a request can take is out of range."""
SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class Recorder:
    """An HDR histogram of latencies in µs."""

    def __init__(self) -> None:
        self._h: Any = histogram.HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)

    def record_ns(self, ns: int) -> None:
        """Record one latency given in nanoseconds (rounded to µs, at least 1)."""
        self._h.record_value(min(HIGHEST_US, max(LOWEST_US, (ns + 500) // 1000)))

    def record_us(self, us: float) -> None:
        self._h.record_value(min(HIGHEST_US, max(LOWEST_US, round(us))))

    def add(self, other: Recorder) -> None:
        """Add every value recorded in ``other`` to this one."""
        self._h.add(other._h)

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def value_at(self, percentile: float) -> int:
        """The latency (µs) at ``percentile`` (0-100); 0 when empty."""
        if self.count == 0:
            return 0
        return int(self._h.get_value_at_percentile(percentile))

    def summary(self) -> Summary:
        if self.count == 0:
            return Summary(0, 0, 0, 0, 0, 0, 0.0)
        p50, p90, p99, p999 = (self.value_at(p) for p in PERCENTILES)
        return Summary(
            count=self.count,
            p50_us=p50,
            p90_us=p90,
            p99_us=p99,
            p999_us=p999,
            max_us=int(self._h.get_max_value()),
            mean_us=round(float(self._h.get_mean_value()), 1),
        )

    def cdf(self, points: int = 200) -> tuple[tuple[float, float], ...]:
        """``(latency µs, fraction of requests at or below it)``, from the
        fastest to the slowest, at most about ``points`` pairs (denser in the
        tail: the percentiles 1 - 10^-k/… are spaced logarithmically)."""
        if self.count == 0:
            return ()
        fractions = sorted(
            {round(1.0 - 10 ** (-4.0 * i / points), 6) for i in range(points)} | {0.5, 0.999}
        )
        pairs = [(float(self.value_at(100 * f)), f) for f in fractions]
        pairs.append((float(self._h.get_max_value()), 1.0))
        return tuple(pairs)


def merged(recorders: Iterable[Recorder]) -> Recorder:
    """One recorder holding the values of all of ``recorders``."""
    out = Recorder()
    for r in recorders:
        out.add(r)
    return out


@dataclasses.dataclass(frozen=True)
class Summary:
    """Count and percentiles of a latency distribution, in µs."""

    count: int
    p50_us: int
    p90_us: int
    p99_us: int
    p999_us: int
    max_us: int
    mean_us: float

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50": self.p50_us,
            "p90": self.p90_us,
            "p99": self.p99_us,
            "p99.9": self.p999_us,
            "max": self.max_us,
            "mean": self.mean_us,
        }
