"""The node's eviction rules: extra copies first, then the fewest recent
requests per byte, then least recently used; never a pinned model."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.core import errors, eviction

MB = 1024 * 1024


def test_evicts_nothing_when_the_model_fits() -> None:
    entries = [eviction.Entry("a", 10 * MB, 1.0)]
    assert eviction.plan_room(entries, 100 * MB, 50 * MB) == eviction.EvictionPlan((), 0)


def test_evicts_least_recently_used_when_full() -> None:
    entries = [
        eviction.Entry("newest", 40 * MB, 3.0),
        eviction.Entry("oldest", 40 * MB, 1.0),
        eviction.Entry("middle", 10 * MB, 2.0),
    ]
    plan = eviction.plan_room(entries, 100 * MB, 30 * MB)
    assert plan.evict == ("oldest",)
    assert plan.freed_bytes == 40 * MB


def test_evicts_several_in_lru_order_until_enough_is_free() -> None:
    entries = [eviction.Entry(f"m{i}", 20 * MB, float(i)) for i in range(5)]
    plan = eviction.plan_room(entries, 100 * MB, 50 * MB)
    assert plan.evict == ("m0", "m1", "m2")


def test_never_evicts_a_pinned_model() -> None:
    entries = [
        eviction.Entry("old-but-busy", 50 * MB, 1.0, pinned=True),
        eviction.Entry("recent", 50 * MB, 2.0),
    ]
    assert eviction.plan_room(entries, 100 * MB, 40 * MB).evict == ("recent",)


def test_refuses_when_pinned_models_leave_too_little_room() -> None:
    entries = [
        eviction.Entry("busy", 80 * MB, 1.0, pinned=True),
        eviction.Entry("idle", 10 * MB, 2.0),
    ]
    with pytest.raises(errors.InsufficientCapacity, match="in use or loading"):
        eviction.plan_room(entries, 100 * MB, 30 * MB)


def test_refuses_a_model_larger_than_the_whole_capacity() -> None:
    with pytest.raises(errors.InsufficientCapacity, match="capacity is"):
        eviction.plan_room([], 100 * MB, 101 * MB)


def test_predicts_disk_bytes_times_the_multiplier() -> None:
    assert eviction.predicted_size(8 << 20, 1.25, 1 << 20) == 10 << 20


def test_predicts_at_least_the_minimum_for_a_tiny_file() -> None:
    assert eviction.predicted_size(1_000, 1.25, 1 << 20) == 1 << 20


def test_reports_the_measurement_when_it_exceeds_the_prediction() -> None:
    assert eviction.corrected_size(10 << 20, 30 << 20, 1 << 20) == 30 << 20


def test_keeps_the_prediction_when_the_measurement_is_smaller() -> None:
    assert eviction.corrected_size(10 << 20, 2 << 20, 1 << 20) == 10 << 20


@pytest.mark.parametrize("measured", [None, 0, -(5 << 20)])
def test_keeps_the_prediction_without_a_positive_measurement(measured: int | None) -> None:
    assert eviction.corrected_size(3 << 20, measured, 1 << 20) == 3 << 20


def test_never_reports_below_the_minimum() -> None:
    assert eviction.corrected_size(0, 1000, 1 << 20) == 1 << 20


def test_evicts_extra_copies_before_the_least_recently_used_model() -> None:
    entries = [
        eviction.Entry("only-copy-old", 40 * MB, 1.0),
        eviction.Entry("extra-copy-recent", 40 * MB, 5.0, extra=True),
        eviction.Entry("only-copy-recent", 20 * MB, 4.0),
    ]
    assert eviction.plan_room(entries, 100 * MB, 30 * MB).evict == ("extra-copy-recent",)


def popularity(*request_times: float, half_life: float = 10.0) -> float:
    p = eviction.UNKNOWN
    for t in request_times:
        p = eviction.bumped(p, t, half_life)
    return p


def test_evicts_the_fewest_requests_per_byte_before_the_least_recently_used() -> None:
    entries = [
        # Used last, but once, and large: 1 request per 60 MB.
        eviction.Entry("large-rare", 60 * MB, 9.0, popularity=popularity(9.0)),
        # Older, but asked for three times in 20 MB.
        eviction.Entry("small-popular", 20 * MB, 5.0, popularity=popularity(3.0, 4.0, 5.0)),
    ]
    assert eviction.plan_room(entries, 100 * MB, 30 * MB).evict == ("large-rare",)


def test_a_request_counts_twice_as_much_as_one_a_half_life_earlier() -> None:
    assert popularity(20.0) - popularity(10.0) == pytest.approx(1.0)
    # Two requests a half-life ago weigh as much as one now.
    assert popularity(0.0, 0.0) == pytest.approx(popularity(10.0))


def test_recent_requests_outweigh_old_ones_so_a_shift_in_popularity_is_followed() -> None:
    formerly_popular = popularity(*[float(t) for t in range(20)])  # 20 requests, long ago
    newly_popular = popularity(95.0, 96.0)
    entries = [
        eviction.Entry("formerly-popular", 10 * MB, 20.0, popularity=formerly_popular),
        eviction.Entry("newly-popular", 10 * MB, 96.0, popularity=newly_popular),
    ]
    assert eviction.plan_room(entries, 20 * MB, 10 * MB).evict == ("formerly-popular",)


@settings(deadline=None)  # a busy machine is slow, not wrong
@given(st.floats(0, 1e12), st.floats(0, 1e12))
def test_popularity_stays_finite_however_long_a_node_runs(t1: float, t2: float) -> None:
    p = popularity(t1, t2, half_life=1.0)
    assert math.isfinite(p) and p >= max(t1, t2)


def test_models_never_asked_for_go_by_last_use() -> None:
    entries = [
        eviction.Entry("never-asked-new", 10 * MB, 2.0),
        eviction.Entry("never-asked-old", 10 * MB, 1.0),
        eviction.Entry("asked", 10 * MB, 0.5, popularity=popularity(0.5)),
    ]
    assert eviction.plan_room(entries, 30 * MB, 10 * MB).evict == ("never-asked-old",)


def test_a_model_in_steady_use_keeps_its_whole_popularity() -> None:
    # One request a second for five minutes, the last one a second ago.
    steady = popularity(*[float(t) for t in range(300)], half_life=60.0)
    assert eviction.current(steady, 299.0, 300.0, 60.0) == steady
    assert eviction.current(eviction.UNKNOWN, 0.0, 300.0, 60.0) == eviction.UNKNOWN


def test_a_favourite_idle_for_many_of_its_gaps_ranks_below_a_model_in_steady_use() -> None:
    # Ten requests a second for five minutes, then none for the next minute.
    old = popularity(*[t / 10 for t in range(3000)], half_life=120.0)
    # One request every two seconds, over that last minute only.
    new = popularity(*[300.0 + 2 * t for t in range(30)], half_life=120.0)
    now = 360.0
    assert old > new  # by counts alone, yesterday's favourite stays
    entries = [
        eviction.Entry("old", 10 * MB, 300.0, popularity=eviction.current(old, 300.0, now, 120.0)),
        eviction.Entry("new", 10 * MB, 358.0, popularity=eviction.current(new, 358.0, now, 120.0)),
    ]
    assert eviction.plan_room(entries, 20 * MB, 10 * MB).evict == ("old",)


def test_the_first_victim_is_what_plan_room_would_evict_first() -> None:
    entries = [
        eviction.Entry("busy", MB, 1.0, pinned=True),
        eviction.Entry("popular", MB, 2.0, popularity=10.0),
        eviction.Entry("rare", MB, 3.0, popularity=2.0),
    ]
    victim = eviction.first_victim(entries)
    assert victim is not None and victim.model_id == "rare"
    assert eviction.plan_room(entries, 3 * MB, MB).evict == ("rare",)
    assert eviction.victim_rank(victim) < eviction.victim_rank(entries[1])
    assert eviction.first_victim([entries[0]]) is None


def test_an_extra_copy_ranks_below_every_other_victim() -> None:
    extra = eviction.Entry("x", MB, 9.0, extra=True, popularity=50.0)
    rare = eviction.Entry("y", MB, 0.0, popularity=0.0)
    assert eviction.victim_rank(extra) < eviction.victim_rank(rare)
