"""The simulation's report (:mod:`load_tests.sim_report`) from made-up
figures: its table, the notes that read the steps, and the plots' data."""

from __future__ import annotations

from typing import Any

from load_tests import sim_figures, sim_report


def requests_figures(errs: dict[str, int], lag_p99: float) -> dict[str, Any]:
    """A step's ``requests``: 800 sent, those in ``errs`` failed."""
    failed = sum(errs.values())
    return {
        "sent": 800,
        "ok": 800 - failed,
        "errors": errs,
        "latency_ms": {"p50": 0.2, "p99": 30.0, "max": 40.0},
        "send_lag_ms": {"p50": 1.0, "p99": lag_p99, "max": lag_p99},
    }


def routing_figures(route_p50: float) -> dict[str, Any]:
    """A step's ``routing``: 800 decisions, times scaled from ``route_p50``."""
    return {
        "decisions": 800,
        "us": {"p50": route_p50, "p99": 4 * route_p50, "max": 10 * route_p50},
        "us_by_action": {
            "forward": {"p50": route_p50, "p99": 3 * route_p50, "max": 5 * route_p50},
            "load there": {"p50": 2 * route_p50, "p99": 4 * route_p50, "max": 9 * route_p50},
        },
        "actions": {"forward": 500, "load there": 250, "serve here": 50},
    }


def placement_figures(per_node: list[int], used_min: float) -> dict[str, Any]:
    """A step's ``placement``: one load per model held, ``per_node`` of them."""
    loads = sum(per_node)
    return {
        "loads": loads,
        "loads_per_node": sim_figures.spread(per_node),
        "nodes_with_loads": sum(1 for x in per_node if x),
        "evictions": 3,
        "models_per_node": sim_figures.spread(per_node),
        "models_per_node_sorted": sorted(per_node, reverse=True),
        "used_fraction": {"min": used_min, "max": 0.9, "mean": 0.5, "stddev": 0.1},
        "copies_now": {"1": loads - 4, "2": 2},
        "peak_copies_max": 2,
        "over_max_copies": 0,
        "etcd_only_copies": 0,
        "runtime_only_copies": 0,
    }


def etcd_figures(
    nodes: int,
    models: int,
    idle_per_node: float,
    per_request: float,
    events_per_request: float,
) -> dict[str, Any]:
    """A step's ``etcd``: its traffic at start, at rest and under load."""
    return {
        "start": {"requests": 5 * nodes, "list_keys": nodes * models, "watch_events": 0},
        "idle": {"per_node_per_s": idle_per_node, "watch_events_per_s": 0.2 * nodes**2},
        "load": {
            "by_kind": {"get": 700, "txn": 700, "put": 300},
            "requests": 1700,
            "per_s": 212.0,
            "per_request": per_request,
            "watch_events_per_s": 100.0 * nodes,
            "watch_events_per_request": events_per_request,
            "txn_failed": 1,
            "writes_by_folder": {"instances": 300, "registry": 700},
        },
        "server_load": {"recv:Range": 700, "recv:Txn": 700, "recv:Put": 300, "sent:Watch": 9},
        "db_size": 2 << 20,
        "db_size_in_use": 2 << 20,
    }


def step(
    nodes: int,
    models: int,
    *,
    per_node: list[int] | None = None,
    errors_: dict[str, int] | None = None,
    route_p50: float = 20.0,
    idle_per_node: float = 0.45,
    per_request: float = 2.5,
    events_per_request: float = 12.0,
    used_min: float = 0.3,
    lag_p99: float = 5.0,
) -> dict[str, Any]:
    per_node = per_node if per_node is not None else [5] * nodes
    return {
        "nodes": nodes,
        "models": models,
        "start_s": 0.2 * nodes * models / 1000,
        "process_rss_mib": 150.0 + nodes * models / 1000,
        "requests": requests_figures(errors_ or {}, lag_p99),
        "routing": routing_figures(route_p50),
        "placement": placement_figures(per_node, used_min),
        "etcd": etcd_figures(nodes, models, idle_per_node, per_request, events_per_request),
    }


def figures(*steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": {"cpus": 2},
        "config": {
            "rate_per_s": 100.0,
            "duration_s": 8.0,
            "zipf_alpha": 1.0,
            "node_capacity_models": 24,
            "max_copies": 3,
            "load_ms": 5.0,
            "etcd_clients": 0,
        },
        "node_capacity_bytes": 5 << 30,
        "steps": list(steps),
        "leftover_processes": [],
    }


def test_table_has_one_row_per_step_and_the_details() -> None:
    f = figures(step(10, 1000), step(100, 1000, errors_={"InsufficientCapacity": 2}))
    text = sim_report.table(f)
    assert "10 × 1,000" in text and "100 × 1,000" in text
    assert "800/800" in text and "798/800" in text
    assert "one per node" in text and "(2 CPUs)" in text
    assert "writes by folder: instances 300, registry 700" in text
    assert "InsufficientCapacity 2" in text
    assert text.rstrip().endswith("leftover processes: none")


def test_a_clean_run_says_every_request_was_routed_and_compares_the_steps() -> None:
    f = figures(
        step(10, 1000, route_p50=20.0, events_per_request=12.0, per_request=2.0),
        step(100, 1000, route_p50=40.0, events_per_request=120.0, per_request=2.2),
        step(100, 10_000, route_p50=40.0),
    )
    notes = sim_report.notes(f)
    assert notes[0].startswith("Every request was routed")
    grow = next(n for n in notes if n.startswith("1,000 models, 10 → 100 nodes"))
    assert "per routed request x1.1" in grow and "watch events per request x10.0" in grow
    assert "at rest x100.0" in grow
    assert "routing p50 forward x2.0, load there x2.0" in grow
    models = next(n for n in notes if n.startswith("100 nodes, 1,000 → 10,000 models"))
    assert "routing p50 forward x1.0, load there x1.0" in models
    assert not any("imbalance" in n or "herds" in n or "fell behind" in n for n in notes)
    assert notes[-1].startswith("Times are of one Python process on 2 CPUs")


def test_failures_imbalance_and_herding_are_called_out() -> None:
    herd = [20, 15, 5] + [0] * 7
    f = figures(
        step(
            10,
            1000,
            per_node=herd,
            errors_={"status RESOURCE_EXHAUSTED": 7, "Reroute": 1},
            used_min=0.0,
            lag_p99=300.0,
        )
    )
    f["steps"][0]["placement"]["over_max_copies"] = 2
    f["steps"][0]["placement"]["etcd_only_copies"] = 1
    notes = sim_report.notes(f)
    assert notes[0].startswith("Not every request was routed: 10 × 1,000: 8 failed")
    assert any("more copies at once than its max_copies (2 models)" in n for n in notes)
    assert any("1 copies only in etcd, 0 only in a runtime" in n for n in notes)
    assert any(
        n.startswith("Placement imbalance at 10 × 1,000: models per node 0–20") for n in notes
    )
    herds = next(n for n in notes if n.startswith("Placement herds"))
    assert "3 of 10 nodes took loads, 7 requests failed for lack of room, 3 evictions" in herds
    assert "choose_node" in herds and "passes that status to the client" in herds
    assert any("fell behind the schedule" in n for n in notes)


def test_evictions_while_a_node_is_empty_count_as_herding() -> None:
    f = figures(step(10, 1000, per_node=[9] * 9 + [1], used_min=0.05))
    notes = sim_report.notes(f)
    herds = next(n for n in notes if n.startswith("Placement herds"))
    assert "10 of 10 nodes took loads, 3 evictions while the emptiest node used 5%" in herds
    assert "passes that status" not in herds
    f["steps"][0]["placement"]["evictions"] = 0
    assert not any(n.startswith("Placement herds") for n in sim_report.notes(f))


def test_plots_are_data_for_every_step() -> None:
    f = figures(step(10, 1000), step(30, 1000), step(30, 10_000))
    plots = sim_report.plots(f)
    names = [p.filename for p in plots]
    assert len(set(names)) == len(names) and all(n.startswith("simulate_") for n in names)
    traffic = plots[0]
    assert [s.label for s in traffic.series][:2] == [
        "etcd requests/s, 1,000 models",
        "watch events/s, 1,000 models",
    ]
    assert traffic.series[0].xs == (10.0, 30.0)
    spread_plot = plots[1]
    assert len(spread_plot.series) == 3
    assert spread_plot.series[0].ys == (5.0,) * 10
    by_nodes = plots[2]
    assert [s.label for s in by_nodes.series] == [
        "forward, 1,000 models",
        "load there, 1,000 models",
        "forward, 10,000 models",
        "load there, 10,000 models",
    ]
    assert by_nodes.series[1].ys == (40.0, 40.0) and by_nodes.series[1].dashed
    by_models = plots[3]
    assert [s.label for s in by_models.series] == [
        "forward, 10 nodes",
        "load there, 10 nodes",
        "forward, 30 nodes",
        "load there, 30 nodes",
    ]
    assert by_models.series[2].xs == (1000.0, 10_000.0)
