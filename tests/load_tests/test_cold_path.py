"""The cold-path scenario (:mod:`load_tests.cold_path`): its reading of the
node's metrics, and a few seconds of the real scenario."""

from __future__ import annotations

import pytest

from load_tests import cold_path, cold_path_report
from mesh.node import metrics


def test_histogram_sums_read_the_nodes_own_metric_names() -> None:
    m = metrics.Metrics()
    m.pulled("a", 12.5, 1000)
    m.loaded("a", 20.0, 4096)
    m.waited_for_load("a", 22.0)
    m.invoked("ModelInfer", "a", 1.5, 100, 50)
    m.invoked("ModelReady", "a", 9.0, 10, 5)
    m.api_call("ModelInfer", "OK", 25.0)
    m.api_call("ModelInfer", "NOT_FOUND", 1.0)
    m.api_call("ModelReady", "OK", 7.0)
    got = cold_path.histogram_sums(m.exposition().decode())
    assert got["pull_sum"] == 12.5 and got["pull_count"] == 1
    assert got["loadmodel_sum"] == 20.0
    assert got["cache_miss_sum"] == 22.0
    assert got["invoke_sum"] == 1.5 and got["invoke_count"] == 1
    assert got["api_sum"] == 26.0 and got["api_count"] == 2


@pytest.mark.integration
def test_smoke_run_of_the_real_scenario() -> None:
    r = cold_path.run(True, ["--smoke"])
    f = r.figures
    assert f["leftover_processes"] == []
    assert list(f["models"]) == ["iris"]
    iris = f["models"]["iris"]
    runs = cold_path.SMOKE.runs
    for side, phases in (
        ("mesh_ms", cold_path_report.MESH_PHASES[:3]),
        ("hand_ms", cold_path_report.HAND_PHASES),
    ):
        for phase in phases:
            assert len(iris[side][phase]["all"]) == runs
            assert all(v > 0 for v in iris[side][phase]["all"]), (side, phase)
    mesh, hand = iris["mesh_ms"], iris["hand_ms"]
    for i in range(runs):
        parts = sum(mesh[k]["all"][i] for k in cold_path_report.MESH_PHASES)
        assert parts == pytest.approx(mesh["total"]["all"][i], abs=0.05)
        assert mesh["record"]["all"][i] > 0 and mesh["transport"]["all"][i] > 0
        hand_parts = sum(hand[k]["all"][i] for k in cold_path_report.HAND_PHASES)
        assert hand_parts == pytest.approx(hand["sum"]["all"][i], abs=0.05)
    assert iris["ratio"]["p50"] == pytest.approx(
        mesh["total"]["p50"] / hand["sum"]["p50"], abs=0.01
    )
    assert "iris" in r.table and r.notes[0].startswith("Target cold path")
