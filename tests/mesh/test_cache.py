"""The node's eviction rules: least recently used first, never a pinned model."""

from __future__ import annotations

import pytest

from mesh import cache, errors

MB = 1024 * 1024


def test_evicts_nothing_when_the_model_fits() -> None:
    entries = [cache.Entry("a", 10 * MB, 1.0)]
    assert cache.plan_room(entries, 100 * MB, 50 * MB) == cache.EvictionPlan((), 0)


def test_evicts_least_recently_used_when_full() -> None:
    entries = [
        cache.Entry("newest", 40 * MB, 3.0),
        cache.Entry("oldest", 40 * MB, 1.0),
        cache.Entry("middle", 10 * MB, 2.0),
    ]
    plan = cache.plan_room(entries, 100 * MB, 30 * MB)
    assert plan.evict == ("oldest",)
    assert plan.freed_bytes == 40 * MB


def test_evicts_several_in_lru_order_until_enough_is_free() -> None:
    entries = [cache.Entry(f"m{i}", 20 * MB, float(i)) for i in range(5)]
    plan = cache.plan_room(entries, 100 * MB, 50 * MB)
    assert plan.evict == ("m0", "m1", "m2")


def test_never_evicts_a_pinned_model() -> None:
    entries = [
        cache.Entry("old-but-busy", 50 * MB, 1.0, pinned=True),
        cache.Entry("recent", 50 * MB, 2.0),
    ]
    assert cache.plan_room(entries, 100 * MB, 40 * MB).evict == ("recent",)


def test_refuses_when_pinned_models_leave_too_little_room() -> None:
    entries = [cache.Entry("busy", 80 * MB, 1.0, pinned=True), cache.Entry("idle", 10 * MB, 2.0)]
    with pytest.raises(errors.InsufficientCapacity, match="in use or loading"):
        cache.plan_room(entries, 100 * MB, 30 * MB)


def test_refuses_a_model_larger_than_the_whole_capacity() -> None:
    with pytest.raises(errors.InsufficientCapacity, match="capacity is"):
        cache.plan_room([], 100 * MB, 101 * MB)


def test_predicted_size_is_disk_size_times_multiplier_with_a_floor() -> None:
    assert cache.predicted_size(100 * MB, 1.25, MB) == 125 * MB
    assert cache.predicted_size(10, 1.25, MB) == MB
