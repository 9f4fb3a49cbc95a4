"""Where copies go and which copy serves: the pure placement rules."""

from __future__ import annotations

import dataclasses
import math

import pytest

from mesh.core import errors, placement, records

MB = 1024 * 1024
NOW = 1_000_000


def node(
    free_mb: int,
    capacity_mb: int = 100,
    lru: int = 0,
    labels: tuple[str, ...] = ("mt:sklearn",),
    shutting_down: bool = False,
    loading: int = 0,
    rpm: int = 0,
    victim: float | None = None,
) -> records.InstanceRecord:
    return records.InstanceRecord(
        endpoint="x:1",
        capacity_bytes=capacity_mb * MB,
        used_bytes=(capacity_mb - free_mb) * MB,
        lru_time_ms=lru,
        victim_rank=victim,
        labels=labels,
        shutting_down=shutting_down,
        in_flight_loads=loading,
        rpm=rpm,
    )


def choose(
    instances: dict[str, records.InstanceRecord], size_mb: int = 10, **kw: object
) -> str | None:
    return placement.choose_node(
        instances,
        size_mb * MB,
        labels=("mt:sklearn",),
        now_ms=NOW,
        **kw,  # type: ignore[arg-type]
    )


def test_prefers_the_node_with_the_most_free_space() -> None:
    assert choose({"a": node(20), "b": node(60), "c": node(40)}) == "b"


def test_a_model_goes_back_to_the_node_that_held_it_last_when_that_node_has_room() -> None:
    instances = {"a": node(20), "b": node(60)}
    assert choose(instances, last_node="a") == "a"
    assert choose({"a": node(5), "b": node(60)}, last_node="a") == "b"  # no room there: the rule
    model = dataclasses.replace(_model(), last_node="a")
    assert _route(model, {"self": node(60), "a": node(20)}) == placement.Route(
        placement.Action.LOAD_THERE, "a"
    )


def test_skips_nodes_shutting_down_missing_labels_or_avoided() -> None:
    instances = {
        "draining": node(90, shutting_down=True),
        "triton": node(80, labels=("mt:python",)),
        "failed": node(70),
        "ok": node(20),
    }
    assert choose(instances, avoid={"failed"}) == "ok"


def test_when_no_node_has_room_picks_the_one_whose_lru_model_is_oldest() -> None:
    instances = {
        "a": node(0, lru=NOW - 5000),
        "b": node(5, lru=NOW - 90_000),
        "c": node(0, lru=NOW - 1000),
    }
    assert choose(instances) == "b"


def test_refuses_to_evict_models_used_within_the_churn_threshold() -> None:
    instances = {"a": node(0, lru=NOW - 5000), "b": node(0, lru=NOW - 9000)}
    assert choose(instances, churn_threshold_ms=10_000) is None
    assert choose(instances, churn_threshold_ms=6_000) == "b"


def test_breaks_ties_by_load_then_spreads_models_the_same_way_on_every_node() -> None:
    assert choose({"b": node(50), "a": node(50, loading=1)}, model_id="m") == "b"
    alike = {i: node(50) for i in "abcd"}
    picks = [choose(alike, model_id=f"m{k}") for k in range(40)]
    assert picks == [choose(dict(reversed(alike.items())), model_id=f"m{k}") for k in range(40)]
    assert all(picks.count(i) >= 4 for i in "abcd")  # 40 models spread over 4 nodes


def test_nodes_with_room_for_as_many_copies_count_as_equal() -> None:
    # 55 and 59 MB free both fit five 10 MB copies: the spread decides, and
    # either may be picked; 61 fits six and wins whatever the spread says.
    picks = {choose({"a": node(55), "b": node(59)}, model_id=f"m{k}") for k in range(20)}
    assert picks == {"a", "b"}
    assert {choose({"a": node(55), "b": node(61)}, model_id=f"m{k}") for k in range(20)} == {"b"}


def test_never_places_a_model_larger_than_a_node() -> None:
    assert choose({"a": node(0, capacity_mb=50, lru=1)}, size_mb=60) is None


def _model(**copies: records.CopyState) -> records.ModelRecord:
    return records.ModelRecord(
        model_type="sklearn",
        path="p",
        copies={i: records.CopyInfo(s, 1) for i, s in copies.items()},
    )


def _route(
    model: records.ModelRecord, instances: dict[str, records.InstanceRecord], **kw: object
) -> placement.Route:
    args: dict[str, object] = {
        "here": False,
        "labels": ("mt:sklearn",),
        "model_size": 10 * MB,
        "now_ms": NOW,
        "failure_expiry_ms": 60_000,
    }
    args.update(kw)
    return placement.route("m", model, instances, "self", **args)  # type: ignore[arg-type]


def test_a_request_is_served_here_when_this_node_holds_a_copy() -> None:
    route = _route(
        _model(other=records.CopyState.LOADED), {"self": node(50), "other": node(50)}, here=True
    )
    assert route == placement.Route(placement.Action.SERVE_HERE)


def test_forwards_to_the_ready_copy_with_fewest_requests_in_flight() -> None:
    instances = {"self": node(50), "a": node(50), "b": node(50)}
    model = _model(a=records.CopyState.LOADED, b=records.CopyState.LOADED)
    route = _route(model, instances, in_flight={"a": 3, "b": 1})
    assert route == placement.Route(placement.Action.FORWARD, "b")


def test_prefers_a_copy_on_a_node_that_is_not_draining() -> None:
    instances = {"self": node(50), "a": node(50, shutting_down=True), "b": node(50)}
    model = _model(a=records.CopyState.LOADED, b=records.CopyState.LOADED)
    assert _route(model, instances, in_flight={"b": 5}).instance == "b"


def test_ignores_copies_on_dead_or_avoided_nodes() -> None:
    instances = {"self": node(90), "a": node(50)}
    model = _model(gone=records.CopyState.LOADED, a=records.CopyState.LOADED)
    assert _route(model, instances, avoid={"a"}) == placement.Route(placement.Action.SERVE_HERE)


def test_waits_for_a_copy_that_is_loading_elsewhere() -> None:
    model = _model(a=records.CopyState.LOADING)
    assert _route(model, {"self": node(50), "a": node(50)}).action is placement.Action.WAIT


@pytest.mark.parametrize("state", [records.CopyState.LOADED, records.CopyState.LOADING])
def test_a_copy_of_its_own_the_record_still_shows_is_loaded_again_here_not_forwarded_to(
    state: records.CopyState,
) -> None:
    # The node's copy is being unloaded (here=False) but etcd still lists it.
    assert _route(_model(self=state), {"self": node(50)}) == placement.Route(
        placement.Action.SERVE_HERE
    )
    instances = {"self": node(10), "a": node(90)}
    assert _route(_model(self=state), instances) == placement.Route(
        placement.Action.LOAD_THERE, "a"
    )


def test_a_cold_model_loads_on_the_chosen_node() -> None:
    instances = {"self": node(10), "a": node(90)}
    assert _route(_model(), instances) == placement.Route(placement.Action.LOAD_THERE, "a")
    instances = {"self": node(90), "a": node(10)}
    assert _route(_model(), instances) == placement.Route(placement.Action.SERVE_HERE)


def test_fails_fast_after_three_recent_failures() -> None:
    instances = {i: node(50) for i in ("self", "b", "c")} | {"a": node(60)}
    model = records.ModelRecord(
        model_type="sklearn",
        path="p",
        failures={i: records.FailureInfo(NOW - 100, f"bad on {i}") for i in ("a", "b", "c")},
    )
    with pytest.raises(errors.ModelLoadFailed, match="bad on"):
        _route(model, instances)
    # Old failures no longer count: the model is placed again (on "a": the
    # most room).
    assert _route(model, instances, now_ms=NOW + 120_000) == placement.Route(
        placement.Action.LOAD_THERE, "a"
    )


def test_with_fewer_nodes_fails_fast_once_every_able_node_failed() -> None:
    instances = {"self": node(50), "a": node(50, labels=("mt:python",))}
    model = records.ModelRecord(
        model_type="sklearn", path="p", failures={"self": records.FailureInfo(NOW, "corrupt")}
    )
    with pytest.raises(errors.ModelLoadFailed, match="corrupt"):
        _route(model, instances)


def test_a_type_no_node_serves_names_the_labels() -> None:
    with pytest.raises(errors.NoSupportingRuntime, match="mt:onnx"):
        _route(_model(), {"self": node(50)}, labels=("mt:onnx",))


def test_a_pinned_runtime_adds_its_label() -> None:
    assert placement.required_labels("sklearn", "mlserver-1.x") == ("mt:sklearn", "rt:mlserver-1.x")
    assert placement.required_labels("sklearn") == ("mt:sklearn",)


def test_a_busy_copy_wants_a_sibling_up_to_the_maximum() -> None:
    assert placement.wants_extra_copy(
        rpm=900, threshold_rpm=600, copies=1, max_copies=0, able_nodes=3
    )
    assert not placement.wants_extra_copy(
        rpm=500, threshold_rpm=600, copies=1, max_copies=0, able_nodes=3
    )
    assert not placement.wants_extra_copy(
        rpm=900, threshold_rpm=600, copies=2, max_copies=2, able_nodes=3
    )
    assert not placement.wants_extra_copy(
        rpm=900, threshold_rpm=600, copies=3, max_copies=0, able_nodes=3
    )


def test_loading_copies_count_towards_the_minimum() -> None:
    rec = records.ModelRecord(
        model_type="sklearn",
        path="p",
        min_copies=3,
        copies={
            "a": records.CopyInfo(records.CopyState.LOADING, 1),
            "dead": records.CopyInfo(records.CopyState.LOADED, 1),
        },
    )
    assert placement.missing_copies(rec, {"a": node(50), "b": node(50)}) == 2


def _copies(**states: records.CopyState) -> dict[str, records.CopyInfo]:
    return {i: records.CopyInfo(state, 1) for i, state in states.items()}


def test_a_copy_is_extra_when_another_live_node_holds_a_ready_one() -> None:
    instances = {"a": node(50), "b": node(50)}
    loaded, loading = records.CopyState.LOADED, records.CopyState.LOADING
    rec = records.ModelRecord("sklearn", "m", copies=_copies(a=loaded, b=loaded))
    assert placement.is_extra_copy(rec, instances, "a")
    rec = records.ModelRecord("sklearn", "m", copies=_copies(a=loaded, b=loading))
    assert not placement.is_extra_copy(rec, instances, "a")  # b is only loading
    rec = records.ModelRecord("sklearn", "m", copies=_copies(a=loaded, gone=loaded))
    assert not placement.is_extra_copy(rec, instances, "a")  # "gone" is dead


def test_a_copy_a_models_minimum_needs_is_not_extra() -> None:
    instances = {"a": node(50), "b": node(50), "c": node(50)}
    loaded = records.CopyState.LOADED
    rec = records.ModelRecord("sklearn", "m", copies=_copies(a=loaded, b=loaded), min_copies=2)
    assert not placement.is_extra_copy(rec, instances, "a")
    rec = dataclasses.replace(rec, copies=_copies(a=loaded, b=loaded, c=loaded))
    assert placement.is_extra_copy(rec, instances, "a")


def test_a_node_whose_disk_holds_the_model_is_preferred_among_nodes_with_room() -> None:
    instances = {"a": node(20), "b": node(60)}
    assert choose(instances, on_disk=("a",)) == "a"
    assert choose(instances, on_disk=("gone",)) == "b"


def test_a_node_whose_disk_holds_the_model_is_preferred_among_nodes_that_evict() -> None:
    instances = {"old": node(0, lru=1), "new": node(0, lru=2)}
    assert choose(instances, on_disk=("new",)) == "new"
    assert choose({"roomy": node(50), "new": node(0, lru=2)}, on_disk=("new",)) == "roomy"


def test_full_nodes_evict_where_the_first_victim_is_cheapest_even_off_disk() -> None:
    instances = {"a": node(0, lru=1, victim=-20.0), "b": node(0, lru=2, victim=-25.0)}
    assert choose(instances, on_disk=("a",)) == "b"
    # Equal victims: the disk copy saves the pull; then the older LRU model.
    instances = {"a": node(0, lru=1, victim=-20.0), "b": node(0, lru=2, victim=-20.0)}
    assert choose(instances, on_disk=("b",)) == "b"
    assert choose(instances) == "a"


def test_an_extra_copy_is_the_cheapest_victim_of_all() -> None:
    instances = {"a": node(0, victim=-30.0), "b": node(0, victim=-math.inf)}
    assert choose(instances) == "b"


def test_a_full_node_that_names_no_victim_is_chosen_last() -> None:
    # Nothing evictable there now (all in use), or an older node that does not say.
    instances = {"busy": node(0, lru=1), "idle": node(0, lru=5, victim=10.0)}
    assert choose(instances, on_disk=("busy",)) == "idle"
    assert choose({"busy": node(0, lru=1)}) == "busy"


def test_a_load_goes_to_the_node_whose_disk_holds_the_model() -> None:
    model = dataclasses.replace(_model(), disk_copies=("other",))
    route = _route(model, {"self": node(60), "other": node(20)})
    assert route == placement.Route(placement.Action.LOAD_THERE, "other")
