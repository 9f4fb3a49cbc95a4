"""The simulation's outside meters (:mod:`load_tests.sim_meters`): etcd's
``/metrics`` read and differenced, loaded copies read from a listing of the
model records, and the timer around the real ``placement.route``."""

from __future__ import annotations

from typing import Any

import pytest

from load_tests import sim_meters
from mesh.core import errors, placement, records


def _grpc(name: str, method: str, service: str, kind: str, value: int) -> str:
    labels = f'grpc_method="{method}",grpc_service="etcdserverpb.{service}",grpc_type="{kind}"'
    return f"{name}{{{labels}}} {value}"


RECV = "grpc_server_msg_received_total"
SENT = "grpc_server_msg_sent_total"
METRICS = "\n".join(
    [
        f"# TYPE {RECV} counter",
        _grpc(RECV, "Range", "KV", "unary", 12),
        _grpc(RECV, "Txn", "KV", "unary", 5),
        _grpc(RECV, "Status", "Maintenance", "unary", 3),
        f"# TYPE {SENT} counter",
        _grpc(SENT, "Watch", "Watch", "bidi_stream", 40),
        _grpc(SENT, "Range", "KV", "unary", 12),
        "# TYPE etcd_mvcc_put_total counter",
        "etcd_mvcc_put_total 9",
        "# TYPE etcd_debugging_mvcc_events_total counter",
        "etcd_debugging_mvcc_events_total 38",
        "# TYPE etcd_mvcc_db_total_size_in_bytes gauge",
        "etcd_mvcc_db_total_size_in_bytes 20480",
        "etcd_mvcc_db_total_size_in_use_in_bytes 16384",
        "",
    ]
)


def test_etcd_metrics_are_read_and_differenced() -> None:
    before = sim_meters.etcd_counters(METRICS)
    assert before == {
        "recv:Range": 12.0,
        "recv:Txn": 5.0,
        "sent:Watch": 40.0,
        "mvcc:put": 9.0,
        "mvcc:events": 38.0,
        "db_size": 20480.0,
        "db_size_in_use": 16384.0,
    }
    after = {**before, "recv:Range": 20.0, "db_size": 40960.0, "recv:Put": 1.0}
    assert sim_meters.counter_delta(after, before) == {"recv:Put": 1, "recv:Range": 8}


def test_loaded_copies_are_read_from_a_listing() -> None:
    rec = records.ModelRecord(
        model_type="sklearn",
        path="p",
        copies={
            "a": records.CopyInfo(records.CopyState.LOADED, 1),
            "b": records.CopyInfo(records.CopyState.LOADING, 1),
        },
    )
    items = [
        ("sim/registry/m1", rec.to_json()),
        ("sim/instances/a", b"{}"),
        ("other/registry/m2", rec.to_json()),
    ]
    assert sim_meters.etcd_pairs(items, "sim") == {("m1", "a")}


def test_the_route_timer_times_the_real_route_and_puts_it_back() -> None:
    original = placement.route
    timer = sim_meters.RouteTimer()
    model = records.ModelRecord(model_type="sklearn", path="p")
    node = records.InstanceRecord(endpoint="x", capacity_bytes=100, labels=("mt:sklearn",))
    kwargs: dict[str, Any] = {
        "here": False,
        "model_size": 10,
        "now_ms": 1,
        "failure_expiry_ms": 1000,
        "labels": ("mt:sklearn",),
    }
    with timer.installed():
        assert placement.route is not original
        decision = placement.route("m", model, {"a": node}, "b", **kwargs)
        assert decision == placement.Route(placement.Action.LOAD_THERE, "a")
        with pytest.raises(errors.RuntimeUnavailable):
            placement.route("m", model, {}, "b", **kwargs)
    assert placement.route is original
    assert len(timer.ns) == 2 and all(ns > 0 for ns in timer.ns)
    assert timer.actions == {"load there": 1, "error: RuntimeUnavailable": 1}
    assert set(timer.by_action) == {"load there", "error: RuntimeUnavailable"}
    timer.reset()
    assert timer.ns == [] and not timer.actions
