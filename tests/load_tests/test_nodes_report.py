"""The nodes scenario's report (:mod:`load_tests.nodes_report`) from made-up
figures: what the table and notes say when more room helps and when it
does not, and the plots' curves."""

from __future__ import annotations

import dataclasses
from typing import Any

from load_tests import nodes, nodes_report


def phase(
    ok: int, p99_us: int, loads: int, hit: float, forwarded: int, errors: dict[str, int]
) -> dict[str, Any]:
    return {
        "mode": "open",
        "sent": ok + sum(errors.values()),
        "ok": ok,
        "errors": errors,
        "duration_s": 8.0,
        "throughput_per_s": ok / 8.0,
        "latency_us": {
            "count": ok,
            "p50": 4000,
            "p90": 9000,
            "p99": p99_us,
            "p99.9": 2 * p99_us,
            "max": 3 * p99_us,
            "mean": 6000.0,
        },
        "peak_in_flight": 10,
        "offered_rate_per_s": 40.0,
        "send_lag_us": {"p50": 600, "p99": 2000, "max": 4000},
        "mesh": {
            "loads": loads,
            "load_failures": 0,
            "evictions": loads,
            "waited_for_load": round(ok * (1 - hit)),
            "served": ok,
            "api_errors": sum(errors.values()),
            "forwarded": forwarded,
            "hit_rate": hit,
            "loads_per_1000": round(1000 * loads / ok, 1),
        },
        "cpu_busy": 0.9,
    }


def one_run(
    k: int, loads: int, hit: float, sat_errors: dict[str, int], self_calls: int = 0
) -> dict[str, Any]:
    return {
        "nodes": k,
        "startup_s": 5.0,
        "open": phase(320, 150_000 // k, loads, hit, 0 if k == 1 else 100, {}),
        "saturation": phase(
            2000, 200_000, loads // 2, hit, self_calls if k == 1 else 900, sat_errors
        ),
        "per_node": [
            {"models_here": 8, "used_bytes": 8 << 24, "capacity_bytes": 8 << 24, "served": 100}
            for _ in range(k)
        ],
        "models_loaded_cluster": 8 * k,
        "models_with_failure": 0,
        "took_s": 25.0,
    }


def figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cfg = nodes.QUICK
    return {
        "machine": {"cpus": 2},
        "config": {**dataclasses.asdict(cfg), "node_counts": [r["nodes"] for r in runs]},
        "model": {"name": "iris logistic regression", "type": "sklearn", "file_bytes": 991},
        "capacity": {
            "node_bytes": cfg.slots * cfg.model_bytes,
            "model_bytes": cfg.model_bytes,
            "models_per_node": cfg.slots,
            "working_set_bytes": cfg.models * cfg.model_bytes,
            "working_set_over_one_node": 2.5,
            "top_slots_request_share": 0.755,
        },
        "spread": "round-robin over the nodes' endpoints",
        "eviction": "popularity",
        "runs": runs,
        "leftover_processes": [],
        "cdf": {str(r["nodes"]): ((1000.0, 0.5), (9000.0, 0.99), (20000.0, 1.0)) for r in runs},
    }


def test_a_run_where_room_helps_reads_so() -> None:
    f = figures([one_run(1, 150, 0.5, {}), one_run(2, 36, 0.89, {}), one_run(3, 0, 1.0, {})])
    text = nodes_report.table(f)
    assert "2.50 x one node's room" in text and "eviction: popularity" in text
    assert "leftover processes: none" in text
    assert "errors by status" not in text
    n = nodes_report.notes(f)
    assert n[0] == "Room: 20 models, 8 per node: they all fit from 3 nodes on."
    assert any("loads 150 → 36 → 0" in x and "fewer misses" in x for x in n)
    assert any(x.startswith("Saturation throughput") and "2 CPUs" in x for x in n)
    assert "No request failed in any measured phase." in n
    assert not any("called itself" in x for x in n)


def test_failures_self_forwarding_and_loads_that_did_not_drop_are_called_out() -> None:
    f = figures(
        [
            one_run(1, 20, 0.5, {"FAILED_PRECONDITION": 2000, "RESOURCE_EXHAUSTED": 20}, 3),
            one_run(2, 40, 0.9, {"RESOURCE_EXHAUSTED": 1}),
        ]
    )
    text = nodes_report.table(f)
    assert "errors by status: 1 node: FAILED_PRECONDITION 2000, RESOURCE_EXHAUSTED 20" in text
    n = nodes_report.notes(f)
    assert any("did NOT drop" in x for x in n)
    assert any(x.startswith("Not comparable: 1 node saturation (50% failed)") for x in n)
    errors = next(x for x in n if x.startswith("Errors:"))
    assert "FAILED_PRECONDITION" in errors and "RESOURCE_EXHAUSTED" in errors
    assert any("3 calls were forwarded: the node called itself" in x for x in n)


def test_plots_one_curve_per_node_count() -> None:
    f = figures([one_run(1, 150, 0.5, {}), one_run(2, 36, 0.89, {})])
    plots = nodes_report.plots(f)
    assert [p.filename for p in plots] == [
        "nodes_cdf_open.png",
        "nodes_throughput.png",
        "nodes_loads.png",
    ]
    assert [s.label for s in plots[0].series] == ["1 node", "2 nodes"]
    assert plots[1].series[0].xs == (1.0, 2.0)
