"""The nodes scenario's arithmetic from made-up measurements (the nodes'
metrics pages, per-node parts of a run), and a few seconds of the real
scenario (etcd, one then two nodes with their MLServers)."""

from __future__ import annotations

import pytest

from load_tests import latencies, loadgen, nodes, nodes_report

METRICS = """\
# HELP modelmesh_loadmodel_milliseconds Time to load a model, pull included
# TYPE modelmesh_loadmodel_milliseconds histogram
modelmesh_loadmodel_milliseconds_bucket{le="+Inf"} 7.0
modelmesh_loadmodel_milliseconds_count 7.0
modelmesh_loadmodel_milliseconds_sum 350.0
# TYPE modelmesh_loadmodel_failure counter
modelmesh_loadmodel_failure_total 1.0
# TYPE modelmesh_model_evicted counter
modelmesh_model_evicted_total 5.0
# TYPE modelmesh_cache_miss_milliseconds histogram
modelmesh_cache_miss_milliseconds_count 9.0
modelmesh_cache_miss_milliseconds_sum 900.0
# TYPE modelmesh_invoke_model_milliseconds histogram
modelmesh_invoke_model_milliseconds_count{method="ModelInfer"} 90.0
modelmesh_invoke_model_milliseconds_sum{method="ModelInfer"} 90.0
modelmesh_invoke_model_milliseconds_count{method="ModelMetadata"} 3.0
modelmesh_invoke_model_milliseconds_sum{method="ModelMetadata"} 3.0
# TYPE modelmesh_api_request_milliseconds histogram
modelmesh_api_request_milliseconds_count{code="OK",method="ModelInfer"} 90.0
modelmesh_api_request_milliseconds_sum{code="OK",method="ModelInfer"} 90.0
modelmesh_api_request_milliseconds_count{code="RESOURCE_EXHAUSTED",method="ModelInfer"} 2.0
modelmesh_api_request_milliseconds_sum{code="RESOURCE_EXHAUSTED",method="ModelInfer"} 2.0
modelmesh_api_request_milliseconds_count{code="OK",method="ModelMetadata"} 3.0
modelmesh_api_request_milliseconds_sum{code="OK",method="ModelMetadata"} 3.0
# TYPE modelmesh_instance_capacity_bytes gauge
modelmesh_instance_capacity_bytes 134217728.0
# TYPE modelmesh_instance_used_bytes gauge
modelmesh_instance_used_bytes 100663296.0
# TYPE modelmesh_instance_models_total gauge
modelmesh_instance_models_total 6.0
# TYPE modelmesh_models_loaded_total gauge
modelmesh_models_loaded_total 14.0
# TYPE modelmesh_models_with_failure_total gauge
modelmesh_models_with_failure_total 1.0
"""


def test_reads_what_it_needs_from_a_metrics_page() -> None:
    m = nodes.read_metrics(METRICS)
    assert m["loads"] == 7 and m["load_failures"] == 1 and m["evictions"] == 5
    assert m["waited_for_load"] == 9
    assert m["served"] == 90  # ModelInfer only
    assert m["api_calls"] == 92 and m["api_errors"] == 2
    assert m["capacity_bytes"] == 128 * 2**20 and m["models_here"] == 6
    assert m["models_with_failure"] == 1
    # A node that has done nothing yet shows no labelled series at all.
    assert nodes.read_metrics("")["served"] == 0


def test_mesh_delta_counts_forwarded_calls_and_the_hit_rate() -> None:
    zero = dict.fromkeys(nodes.MESH_COUNTERS, 0.0)
    # Two nodes; the client sent 100 requests, 40 of them were passed on to
    # the other node (140 calls counted in all), 10 waited for a load.
    a = {**zero, "served": 60.0, "api_calls": 70.0, "loads": 3.0, "waited_for_load": 6.0}
    b = {**zero, "served": 40.0, "api_calls": 70.0, "loads": 1.0, "waited_for_load": 4.0}
    d = nodes.mesh_delta([zero, zero], [a, b], sent=100)
    assert d["forwarded"] == 40
    assert d["served"] == 100 and d["loads"] == 4
    assert d["hit_rate"] == 0.9
    assert d["loads_per_1000"] == 40.0
    assert nodes.mesh_delta([zero], [zero], sent=0)["hit_rate"] == 0.0


def part(ok: int, us: int, errors: dict[str, int] | None = None) -> loadgen.RunResult:
    r = latencies.Recorder()
    for _ in range(ok):
        r.record_us(us)
    return loadgen.RunResult(
        mode="open",
        sent=ok + sum((errors or {}).values()),
        ok=ok,
        errors=errors or {},
        duration_s=2.0,
        latency=r,
        send_lag=latencies.Recorder(),
        peak_in_flight=2,
        offered_rate_per_s=25.0,
    )


def test_merge_adds_the_parts_of_a_spread_run() -> None:
    m = nodes.merge([part(40, 1000, {"UNAVAILABLE": 1}), part(60, 3000, {"UNAVAILABLE": 2})])
    assert (m.sent, m.ok, dict(m.errors)) == (103, 100, {"UNAVAILABLE": 3})
    assert m.latency.count == 100
    assert m.latency.value_at(50) == pytest.approx(3000, rel=0.01)
    assert m.offered_rate_per_s == 50.0 and m.duration_s == 2.0


@pytest.mark.integration
def test_smoke_run_of_the_real_scenario() -> None:
    r = nodes.run(True, ["--smoke"])
    f = r.figures
    assert f["leftover_processes"] == []
    one, two = f["runs"]
    assert (one["nodes"], two["nodes"]) == (1, 2)
    for run in (one, two):
        for p in nodes_report.PHASES:
            s = run[p]
            assert s["ok"] > 0, (run["nodes"], p)
            # Every request is accounted for: answered, or failed with a status.
            assert s["ok"] + sum(s["errors"].values()) == s["sent"], (run["nodes"], p)
            # The nodes' runtimes served exactly the requests the client saw answered.
            assert s["mesh"]["served"] == s["ok"], (run["nodes"], p)
    # Twice the room: no more loads, and no lower a hit rate, than one node.
    assert two["open"]["mesh"]["loads"] <= one["open"]["mesh"]["loads"]
    assert two["open"]["mesh"]["hit_rate"] >= one["open"]["mesh"]["hit_rate"]
    assert "2 nodes" in r.table and len(r.plots) == 3
