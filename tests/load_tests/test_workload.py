"""Arrival schedules and popularity: the rate, burstiness and frequencies asked for."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from load_tests import workload


@pytest.mark.parametrize("cv", [0.0, 0.5, 1.0, 2.0])
def test_schedule_has_the_requested_rate_and_cv(cv: float) -> None:
    times = workload.schedule(workload.Arrivals(500.0, cv), 100_000, seed=3)
    rate, measured_cv = workload.gap_stats(times)
    assert rate == pytest.approx(500.0, rel=0.02)
    assert measured_cv == pytest.approx(cv, abs=0.03)
    assert np.all(np.diff(times) >= 0)


def test_poisson_gaps_are_exponential() -> None:
    gaps = np.diff(workload.schedule(workload.Arrivals(100.0), 100_000, seed=5))
    # P(gap > mean) = e^-1 for an exponential.
    assert float(np.mean(gaps > 0.01)) == pytest.approx(np.exp(-1), abs=0.01)


def test_schedule_for_a_duration_stays_inside_it() -> None:
    times = workload.schedule_for(workload.Arrivals(1000.0, 3.0), 2.0, seed=1)
    assert times.max() < 2.0
    assert len(times) == pytest.approx(2000, rel=0.15)
    assert len(workload.schedule_for(workload.Arrivals(1000.0), 0.0, seed=1)) == 0


def test_schedules_repeat_with_their_seed() -> None:
    a = workload.Arrivals(50.0, 1.5)
    assert np.array_equal(workload.schedule(a, 100, 9), workload.schedule(a, 100, 9))
    assert not np.array_equal(workload.schedule(a, 100, 9), workload.schedule(a, 100, 10))


@pytest.mark.parametrize(("rate", "cv"), [(0.0, 1.0), (-1.0, 1.0), (10.0, -0.5)])
def test_bad_arrivals_are_refused(rate: float, cv: float) -> None:
    with pytest.raises(ValueError):
        workload.Arrivals(rate, cv)


@pytest.mark.parametrize("alpha", [0.0, 0.8, 1.2])
def test_zipf_sampler_matches_its_weights(alpha: float) -> None:
    z = workload.Zipf(50, alpha)
    w = workload.zipf_weights(z)
    assert w.sum() == pytest.approx(1.0)
    ranks = workload.sample_ranks(z, 200_000, np.random.default_rng(2))
    freq = np.bincount(ranks, minlength=50) / len(ranks)
    assert np.abs(freq - w).max() < 0.005
    if alpha > 0:
        assert w[0] / w[1] == pytest.approx(2**alpha)


def test_zipf_models_shuffle_ranks_over_indices() -> None:
    z = workload.Zipf(1000, 1.0)
    picks = workload.zipf_models(z, 50_000, seed=4)
    counts = np.bincount(picks, minlength=1000)
    order = workload.popularity_order(1000, 5)
    assert int(np.argmax(counts)) == int(order[0])  # the rank-1 model is the most asked for
    assert counts.sum() == 50_000


def test_synthetic_trace_and_csv_round_trip(tmp_path: pathlib.Path) -> None:
    names = [f"m{i}" for i in range(5)]
    trace = workload.synthetic_trace(
        workload.Arrivals(100.0), workload.Zipf(5, 1.0), names, 200, seed=1
    )
    assert len(trace) == 200 and set(trace.names()) <= set(names)
    path = tmp_path / "t.csv"
    workload.write_trace(trace, path)
    assert workload.read_trace(path) == trace


def test_read_trace_skips_comments_and_rejects_bad_lines(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("# recorded\n0.5,a\n1.0,b\n")
    assert workload.read_trace(path) == workload.Trace((0.5, 1.0), ("a", "b"))
    path.write_text("0.5,a\nsoon,b\n")
    with pytest.raises(ValueError, match="not seconds"):
        workload.read_trace(path)
    with pytest.raises(ValueError, match="must not decrease"):
        workload.Trace((1.0, 0.5), ("a", "b"))
