"""The cluster replay of the mesh's placement and eviction: what it loads
on small traces, next to Belady's optimum over the same slots."""

from __future__ import annotations

from load_tests import cachesim, cluster_cache


def test_with_room_for_every_model_each_loads_once_on_one_node() -> None:
    c = cluster_cache.Cluster(nodes=2, slots_per_node=2, models=4, requests=200)
    trace = [k % 4 for k in range(200)]
    assert cluster_cache.mesh_loads(trace, c) == 4  # no model on both nodes


def test_the_mesh_never_loads_less_than_belady_over_the_pooled_slots() -> None:
    c = cluster_cache.Cluster(nodes=2, slots_per_node=3, models=12, requests=3000)
    trace = cachesim.zipf_trace(c.models, 1.0, c.requests, 5)
    mesh = cluster_cache.mesh_loads(trace.tolist(), c)
    best = cluster_cache.belady_loads(trace, c)
    assert best <= cluster_cache.static_loads(trace, c) and best <= mesh


def test_the_report_names_the_target_and_the_online_bound() -> None:
    f = cluster_cache.measure(cluster_cache.Cluster(models=10, slots_per_node=2, requests=500))
    assert [p["alpha"] for p in f["points"]] == list(cluster_cache.ALPHAS)
    assert all(p["belady_loads"] <= p["mesh_loads"] for p in f["points"])
    assert "1.3 × Belady" in cluster_cache.notes(f)[0]
    assert "mesh/belady" in cluster_cache.table(f)
