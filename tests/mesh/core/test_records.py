"""Records survive their JSON round trip and derive ModelMesh's statuses."""

from __future__ import annotations

import math

import pytest

from mesh.core import errors, records


def _model() -> records.ModelRecord:
    return records.ModelRecord(
        model_type="sklearn",
        path="iris",
        storage_key="s3-main",
        storage_params={"bucket": "models"},
        copies={"node-a": records.CopyInfo(records.CopyState.LOADED, 1000)},
        failures={"node-b": records.FailureInfo(900, "bad file")},
        last_used_ms=1234,
        size_bytes=5_000_000,
        auto_delete=True,
        registered_ms=10,
        last_node="node-c",
    )


def test_model_record_round_trips_through_json() -> None:
    rec = _model()
    assert records.ModelRecord.from_json(rec.to_json()) == rec


def test_a_copy_withdrawn_leaves_its_node_as_the_last_to_hold_the_model() -> None:
    rec = _model().without_copy("node-a")
    assert rec.copies == {} and rec.last_node == "node-a"
    assert rec.without_copy("node-x") is rec  # no copy there: nothing changes


def test_the_nodes_whose_disk_holds_a_model_round_trip_and_change_one_at_a_time() -> None:
    rec = _model().with_disk_copy("node-b", True).with_disk_copy("node-a", True)
    assert rec.disk_copies == ("node-a", "node-b")
    assert records.ModelRecord.from_json(rec.to_json()) == rec
    assert rec.with_disk_copy("node-a", True) is rec
    assert rec.with_disk_copy("node-b", False).disk_copies == ("node-a",)
    assert b'"disk"' not in _model().to_json()


def test_vmodel_and_instance_records_round_trip_through_json() -> None:
    v = records.VModelRecord("a", "b", owner="predictor", failed=True)
    assert records.VModelRecord.from_json(v.to_json()) == v
    i = records.InstanceRecord(
        "127.0.0.1:8033", 10**9, used_bytes=5, labels=("mt:sklearn",), shutting_down=True
    )
    assert records.InstanceRecord.from_json(i.to_json()) == i


@pytest.mark.parametrize("victim", [None, 3.25, -math.inf])
def test_an_instance_records_victim_rank_keeps_its_order_through_json(
    victim: float | None,
) -> None:
    i = records.InstanceRecord("127.0.0.1:8033", 10**9, victim_rank=victim)
    back = records.InstanceRecord.from_json(i.to_json())
    assert b"Infinity" not in i.to_json()  # plain JSON, readable by any client
    if victim is None:
        assert back.victim_rank is None
    else:
        assert back.victim_rank is not None
        # -inf (an extra copy) comes back as the lowest finite float: still below all else.
        assert back.victim_rank < -1e300 if victim == -math.inf else back.victim_rank == victim


def test_unknown_json_fields_are_ignored() -> None:
    data = b'{"type":"sklearn","path":"p","added_by_a_newer_node":1}'
    assert records.ModelRecord.from_json(data).path == "p"


@pytest.mark.parametrize(
    "data", [b"not json", b"[]", b'{"path":"p"}', b'{"type":"x","copies":{"n":{}}}']
)
def test_malformed_json_is_refused_with_a_clear_error(data: bytes) -> None:
    with pytest.raises(errors.InvalidRequest, match="malformed ModelRecord"):
        records.ModelRecord.from_json(data)


def test_a_successful_load_clears_that_nodes_failure() -> None:
    rec = _model().with_copy("node-b", records.CopyInfo(records.CopyState.LOADING, 2000))
    assert "node-b" not in rec.failures
    assert rec.copies["node-b"].state is records.CopyState.LOADING


def test_a_failure_removes_the_copy_on_that_node() -> None:
    rec = _model().with_failure("node-a", records.FailureInfo(3000, "oom"))
    assert "node-a" not in rec.copies
    assert rec.failures["node-a"].message == "oom"


def test_status_prefers_loaded_then_loading_then_recent_failure() -> None:
    base = records.ModelRecord(model_type="sklearn", path="p")
    assert records.model_status(None, 0, 1000) is records.ModelStatus.NOT_FOUND
    assert records.model_status(base, 0, 1000) is records.ModelStatus.NOT_LOADED
    failed = base.with_failure("n", records.FailureInfo(5000, "x"))
    assert records.model_status(failed, 5500, 1000) is records.ModelStatus.LOADING_FAILED
    assert records.model_status(failed, 7000, 1000) is records.ModelStatus.NOT_LOADED
    loading = failed.with_copy("m", records.CopyInfo(records.CopyState.LOADING, 1))
    assert records.model_status(loading, 5500, 1000) is records.ModelStatus.LOADING
    loaded = loading.with_copy("k", records.CopyInfo(records.CopyState.LOADED, 1))
    assert records.model_status(loaded, 5500, 1000) is records.ModelStatus.LOADED
