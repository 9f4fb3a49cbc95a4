"""The peers scenario's traces and offline references
(:mod:`load_tests.peers_trace`): a trace is a pure function of its seed, its
shapes have the asked skew and burstiness, and the references count what
an LRU, an affinity LRU and Belady load, checked by hand on tiny traces and
against :mod:`load_tests.cachesim` on larger ones."""

from __future__ import annotations

import numpy as np
import pytest

from load_tests import cachesim, peers_trace

NAMES = [f"forest-{i:02d}" for i in range(40)]
POISSON_08, POISSON_12, BURSTY = peers_trace.SHAPES


def test_the_same_seed_builds_the_same_trace_for_every_system() -> None:
    a = peers_trace.build(POISSON_08, 20.0, 40, 2.0, 10.0, seed=16)
    b = peers_trace.build(POISSON_08, 20.0, 40, 2.0, 10.0, seed=16)
    other = peers_trace.build(POISSON_08, 20.0, 40, 2.0, 10.0, seed=17)
    assert a == b
    assert a.picks != other.picks


def test_each_shape_and_rate_gets_its_own_trace() -> None:
    a = peers_trace.build(POISSON_08, 20.0, 40, 2.0, 10.0, seed=16)
    b = peers_trace.build(POISSON_12, 20.0, 40, 2.0, 10.0, seed=16)
    c = peers_trace.build(POISSON_08, 60.0, 40, 2.0, 10.0, seed=16)
    assert len({a.picks, b.picks, c.picks}) == 3


def test_the_warm_up_is_the_requests_before_its_end_and_the_rest_is_timed_from_zero() -> None:
    t = peers_trace.build(POISSON_08, 50.0, 40, 3.0, 5.0, seed=1)
    w_offsets, w_picks = t.warm()
    offsets, picks = t.measured()
    assert len(w_picks) == t.warmup and w_picks + picks == t.picks
    assert all(x < 3.0 for x in w_offsets)
    assert offsets and all(0.0 <= x < 5.0 for x in offsets)


@pytest.mark.parametrize(
    ("shape", "alpha_range", "cv_range"),
    [(POISSON_08, (0.65, 0.95), (0.9, 1.1)), (POISSON_12, (1.05, 1.35), (0.9, 1.1))],
)
def test_a_poisson_shape_has_the_asked_skew_and_cv(
    shape: peers_trace.Shape, alpha_range: tuple[float, float], cv_range: tuple[float, float]
) -> None:
    t = peers_trace.build(shape, 200.0, 40, 0.0, 100.0, seed=3)
    stats = peers_trace.shape_stats(t, 40)
    assert alpha_range[0] <= stats["alpha_fitted"] <= alpha_range[1]
    assert cv_range[0] <= stats["cv"] <= cv_range[1]
    assert stats["rate_per_s"] == pytest.approx(200.0, rel=0.05)


def test_the_bursty_shape_has_gaps_of_cv_about_4() -> None:
    t = peers_trace.build(BURSTY, 200.0, 40, 0.0, 200.0, seed=3)
    stats = peers_trace.shape_stats(t, 40)
    assert 3.4 <= stats["cv"] <= 4.6
    assert 0.85 <= stats["alpha_fitted"] <= 1.15


def test_lru_by_hand() -> None:
    # slots 2: a b a c b -> a, b load; a hits; c evicts b; b evicts a.
    assert peers_trace.lru_misses([0, 1, 0, 2, 1], 2) == [True, True, False, True, True]


def test_belady_by_hand() -> None:
    # slots 2: a b c a b: at c, a comes back before b, so b goes; then a hits, b loads.
    assert peers_trace.belady_misses([0, 1, 2, 0, 1], 2) == [True, True, True, False, True]
    # A model never asked for again goes first.
    assert peers_trace.belady_misses([0, 1, 2, 0, 2], 2) == [True, True, True, False, False]


def test_affinity_keeps_one_lru_per_home_node() -> None:
    names = ["a", "b", "c", "d"]
    homes = [peers_trace.home_node(n, 2) for n in names]
    picks = [0, 1, 2, 3, 0, 1, 2, 3]
    misses = peers_trace.affinity_misses(picks, names, 2, 1)
    for i, m in enumerate(picks):
        same_home_before = [p for p in picks[:i] if homes[p] == homes[m]]
        expected = not same_home_before or same_home_before[-1] != m
        assert misses[i] == expected
    # With room for every model on its home node, only first requests load.
    assert peers_trace.affinity_misses(picks, names, 2, 4) == [True] * 4 + [False] * 4


def test_references_agree_with_cachesim_on_equal_sizes() -> None:
    picks = cachesim.zipf_trace(40, 1.0, 3000, seed=5)
    sizes = np.ones(40, dtype=np.int64)
    as_list = [int(p) for p in picks]
    assert (
        sum(peers_trace.lru_misses(as_list, 16))
        == 3000 - cachesim.lru_policy(picks, sizes, 16).hits
    )
    assert (
        sum(peers_trace.belady_misses(as_list, 16))
        == 3000 - cachesim.belady_policy(picks, sizes, 16).hits
    )


@pytest.mark.parametrize("shape", peers_trace.SHAPES)
def test_belady_loads_no_more_than_either_lru(shape: peers_trace.Shape) -> None:
    t = peers_trace.build(shape, 40.0, 40, 5.0, 30.0, seed=9)
    refs = peers_trace.references(t, NAMES, 2, 8)
    assert refs["belady"] <= refs["lru_affinity"]
    assert refs["belady"] <= refs["lru_cluster"]
    assert refs["belady"] > 0


def test_belady_is_the_optimum_on_tiny_traces() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        picks = [int(x) for x in rng.integers(0, 5, size=9)]
        best = cachesim.optimum(picks, [1] * 5, 2)
        assert sum(peers_trace.belady_misses(picks, 2)) == len(picks) - best


def test_loads_are_counted_per_100_timed_requests() -> None:
    assert peers_trace.per_100([True, True, False, True, False], 1) == 50.0
    assert peers_trace.per_100([True], 1) == 0.0
    assert peers_trace.loads_per_100(7, 200) == 3.5
    assert peers_trace.loads_per_100(7, 0) == 0.0
