"""The arithmetic of the simulation's figures (:mod:`load_tests.simulate`):
spreads over the nodes, percentiles, and a phase's etcd traffic from the
nodes' request counts.

Why it exists: a step's figures are summaries of raw counts and times, and
the summaries are what the report reads and the notes judge; as pure
functions over numbers they are tested on their own, and the report's tests
build made-up figures with the very same functions.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from load_tests import sim_runtime


def spread(values: Sequence[float]) -> dict[str, float]:
    """min, max, mean and population standard deviation (0s for nothing)."""
    if not values:
        return {"min": 0, "max": 0, "mean": 0.0, "stddev": 0.0}
    return {
        "min": min(values),
        "max": max(values),
        "mean": round(statistics.fmean(values), 2),
        "stddev": round(statistics.pstdev(values), 2),
    }


def percentiles(values: Sequence[float], scale_by: float = 1.0) -> dict[str, float]:
    """p50, p99 and max of ``values`` × ``scale_by`` (0s for nothing)."""
    if not len(values):
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    a = np.asarray(values, dtype=np.float64) * scale_by
    return {
        "p50": round(float(np.percentile(a, 50)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
    }


def phase_traffic(
    before: Sequence[Mapping[str, int]], after: Sequence[Mapping[str, int]], seconds: float
) -> dict[str, Any]:
    """The nodes' etcd requests over a phase: by kind, per second, per node
    per second, watch events per second, writes by folder."""
    per_node = [sim_runtime.delta(a, b) for a, b in zip(after, before, strict=True)]
    tot = sim_runtime.total(per_node)
    reqs = sim_runtime.requests_in(tot)
    n = max(1, len(per_node))
    s = max(seconds, 1e-9)
    return {
        "seconds": round(seconds, 2),
        "by_kind": {k: tot[k] for k in sim_runtime.KINDS if tot[k]},
        "requests": reqs,
        "per_s": round(reqs / s, 1),
        "per_node_per_s": round(reqs / s / n, 2),
        "per_node_per_s_spread": spread(
            [round(sim_runtime.requests_in(c) / s, 2) for c in per_node]
        ),
        "watch_events": tot["watch_events"],
        "watch_events_per_s": round(tot["watch_events"] / s, 1),
        "txn_failed": tot["txn_failed"],
        "writes_by_folder": {
            k.removeprefix("write:"): v for k, v in sorted(tot.items()) if k.startswith("write:")
        },
    }
