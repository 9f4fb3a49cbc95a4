"""The simulation scenario (:mod:`load_tests.simulate`): its pure helpers
(spreads and percentiles of :mod:`load_tests.sim_figures`; steps, sizes and
capacity of :mod:`load_tests.sim_config`) and (integration) a few seconds of
the real scenario against a real etcd."""

from __future__ import annotations

import math

import pytest

from load_tests import sim_config, sim_figures, simulate


def test_spread_percentiles_and_steps() -> None:
    assert sim_figures.spread([1, 2, 3, 6]) == {"min": 1, "max": 6, "mean": 3.0, "stddev": 1.87}
    assert sim_figures.spread([]) == {"min": 0, "max": 0, "mean": 0.0, "stddev": 0.0}
    p = sim_figures.percentiles([1000.0] * 99 + [5000.0], 1e-3)
    assert p == {"p50": 1.0, "p99": 1.04, "max": 5.0}
    assert sim_figures.percentiles([]) == {"p50": 0.0, "p99": 0.0, "max": 0.0}
    assert sim_config.parse_steps("10x1000, 100x10000") == ((10, 1000), (100, 10_000))
    for bad in ("10", "x100", "0x10", "ax1"):
        with pytest.raises(ValueError):
            sim_config.parse_steps(bad)


def test_sizes_and_capacity() -> None:
    cfg = sim_config.Config(size_median_mib=8.0, size_sigma=2.0, node_capacity_models=10)
    sizes = sim_config.model_sizes(cfg, 2000)
    assert min(sizes) >= sim_config.MiB and max(sizes) <= 64 * sim_config.MiB
    assert sim_config.model_sizes(cfg, 2000) == sizes  # seeded
    assert sim_config.node_capacity(cfg) == int(10 * 8 * sim_config.MiB * math.exp(2))
    assert sim_config.model_ids(2) == ["sim-model-000000", "sim-model-000001"]


@pytest.mark.integration
def test_smoke_run_against_a_real_etcd() -> None:
    r = simulate.run(True, ["--smoke"])
    f = r.figures
    assert f["leftover_processes"] == []
    (s,) = f["steps"]
    assert (s["nodes"], s["models"]) == sim_config.SMOKE.steps[0]
    req, p, e = s["requests"], s["placement"], s["etcd"]
    # every request routed and answered by a runtime that held its model
    assert req["errors"] == {} and req["ok"] == req["sent"]
    assert p["served_by_runtimes"] == req["sent"] and p["runtime_misses"] == 0
    # every model asked for was loaded; never more copies than max_copies
    assert p["requested_never_loaded"] == 0
    assert p["over_max_copies"] == 0 and 1 <= p["peak_copies_max"] <= sim_config.SMOKE.max_copies
    # loads spread over more than one node; etcd and the runtimes agree
    assert p["nodes_with_loads"] > 1
    assert p["etcd_only_copies"] == 0 and p["runtime_only_copies"] == 0
    # etcd traffic counted by the nodes, and etcd saw at least as much
    load = e["load"]
    assert load["requests"] > 0 and load["watch_events"] > 0
    server, counted = e["server_load"], load["by_kind"]
    assert server["recv:Txn"] >= counted["txn"] > 0
    # Reads are often none: record writes start from the mirror's copy.
    assert server.get("recv:Range", 0) >= counted.get("get", 0)
    # A request for a copy on the node it entered needs no decision
    # (mesh.node.dispatch); the others (forwards, loads) each take one at least.
    assert s["routing"]["decisions"] > 0
    assert e["db_size"] > 0
    assert "10 × 200" in r.table and r.plots
