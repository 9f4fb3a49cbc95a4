"""Cache policies on traces: the offline optimum bounds every policy, the
mesh's rules (``mesh.core.eviction.plan_room``) beat LRU on Zipf traces and are LRU
under ``MESHSERVE_EVICTION=lru``, and the approximations never beat the
exact optimum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from load_tests import cachesim

MiB = cachesim.MiB

traces = st.lists(st.integers(0, 5), min_size=1, max_size=40).map(
    lambda t: np.array(t, dtype=np.int64)
)


def equal_sizes(n: int = 6) -> np.ndarray:
    return np.full(n, 10 * MiB, dtype=np.int64)


@settings(max_examples=150, deadline=None)
@given(trace=traces, slots=st.integers(1, 5))
def test_the_mesh_set_to_lru_is_lru_when_sizes_are_equal(trace: np.ndarray, slots: int) -> None:
    sizes = equal_sizes()
    mesh = cachesim.mesh_lru_policy(trace, sizes, slots * 10 * MiB)
    lru = cachesim.lru_policy(trace, sizes, slots * 10 * MiB)
    assert (mesh.hits, mesh.loaded_bytes) == (lru.hits, lru.loaded_bytes)


@settings(max_examples=150, deadline=None)
@given(trace=traces, slots=st.integers(1, 5))
def test_belady_is_optimal_and_bounds_every_policy_with_equal_sizes(
    trace: np.ndarray, slots: int
) -> None:
    sizes = equal_sizes()
    capacity = slots * 10 * MiB
    outcomes = cachesim.run_all(trace, sizes, capacity)
    best = outcomes["belady"].hits
    assert best == cachesim.optimum(trace.tolist(), sizes.tolist(), capacity)
    for name, o in outcomes.items():
        assert o.hits <= best, name


@settings(max_examples=60, deadline=None)
@given(
    trace=st.lists(st.integers(0, 4), min_size=1, max_size=12).map(
        lambda t: np.array(t, dtype=np.int64)
    ),
    sizes=st.lists(st.integers(1, 6), min_size=5, max_size=5),
    capacity=st.integers(1, 12),
)
def test_no_policy_beats_the_exact_optimum_with_variable_sizes(
    trace: np.ndarray, sizes: list[int], capacity: int
) -> None:
    arr = np.array(sizes, dtype=np.int64) * MiB
    best = cachesim.optimum(trace.tolist(), arr.tolist(), capacity * MiB)
    for name, o in cachesim.run_all(trace, arr, capacity * MiB).items():
        assert o.hits <= best, name


def test_offline_bound_beats_every_online_policy_on_a_zipf_trace() -> None:
    sizes = cachesim.model_sizes(100, cachesim.SizeModel(), seed=1)
    trace = cachesim.zipf_trace(100, 1.0, 5_000, seed=2)
    for fraction in (0.05, 0.1, 0.2):
        outcomes = cachesim.run_all(trace, sizes, int(sizes.sum() * fraction))
        bound = cachesim.offline_best(outcomes)
        for name in ("mesh", "lru", "static", "gdsf"):
            assert outcomes[name].hits <= bound.hits, (fraction, name)
        assert outcomes["mesh_lru"].hits == outcomes["lru"].hits  # one node, nothing pinned
        assert outcomes["mesh"].hits > outcomes["lru"].hits, fraction


def test_reshuffling_moves_popularity_but_keeps_each_stretchs_counts() -> None:
    trace = cachesim.zipf_trace(50, 1.0, 3_000, seed=3)
    out = cachesim.shifted(trace, 50, 1_000, seed=4)
    for start in range(0, 3_000, 1_000):
        before = np.bincount(trace[start : start + 1_000], minlength=50)
        after = np.bincount(out[start : start + 1_000], minlength=50)
        assert sorted(before) == sorted(after)
    firsts = {
        int(np.argmax(np.bincount(out[s : s + 1_000], minlength=50))) for s in (0, 1000, 2000)
    }
    assert len(firsts) > 1  # the favourite changed


def test_a_model_larger_than_the_capacity_is_refused_by_every_policy() -> None:
    sizes = np.array([5 * MiB, 50 * MiB], dtype=np.int64)
    trace = np.array([0, 1, 0, 1, 0], dtype=np.int64)
    for name, o in cachesim.run_all(trace, sizes, 20 * MiB).items():
        assert (o.hits, o.refused, o.loaded_bytes) == (2, 2, 5 * MiB), name


def test_the_mesh_side_floors_sizes_like_the_node() -> None:
    # Two 1-byte models take 1 MiB each on a node: a 1.5 MiB cache holds one.
    sizes = np.array([1, 1], dtype=np.int64)
    trace = np.array([0, 1, 0, 1], dtype=np.int64)
    capacity = 3 * MiB // 2
    assert cachesim.mesh_policy(trace, sizes, capacity).hits == 0
    assert cachesim.lru_policy(trace, sizes, capacity).hits == 2


def test_next_uses() -> None:
    trace = np.array([3, 1, 3, 3, 2], dtype=np.int64)
    assert cachesim.next_uses(trace).tolist() == [2, 5, 3, 5, 5]


def test_static_keeps_the_most_requested_with_room_for_the_rest() -> None:
    sizes = equal_sizes(4)
    trace = np.array([0, 0, 0, 1, 1, 2, 3], dtype=np.int64)
    assert cachesim.static_set(trace, sizes, 30 * MiB) == {0, 1}
    o = cachesim.static_policy(trace, sizes, 30 * MiB)
    assert o.hits == 3 and o.hit_rate == pytest.approx(3 / 7)


def test_model_sizes_are_clipped_and_repeatable() -> None:
    m = cachesim.SizeModel()
    a = cachesim.model_sizes(2000, m, seed=3)
    assert np.array_equal(a, cachesim.model_sizes(2000, m, seed=3))
    assert a.min() >= m.min_bytes and a.max() <= m.max_bytes
    assert float(np.median(a)) == pytest.approx(m.median_bytes, rel=0.15)
