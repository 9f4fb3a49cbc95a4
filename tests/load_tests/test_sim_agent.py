"""Two simulated nodes (:mod:`load_tests.sim_agent`) over the in-memory KV
store: they register, route, load, forward to each other and clean up."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from load_tests import sim_agent, sim_config, sim_meters, sim_runtime, sim_step
from mesh.core import records
from mesh.kv import memory_kv, records_store
from mesh.kv import placement_table as mesh_table
from router import wire


def shows_nodes(mirror: mesh_table.PlacementTable, n: int) -> Callable[[], bool]:
    return lambda: len(mirror.instances()) == n


async def test_two_agents_route_load_and_forward_over_the_memory_store(
    tmp_path: pathlib.Path,
) -> None:
    cfg = sim_config.Config(load_ms=1.0)
    shared = memory_kv.MemoryKV()
    prefix = "simtest"
    ids = sim_config.model_ids(4)
    sizes = sim_config.model_sizes(cfg, 4)
    registrar = records_store.RecordStore(shared, prefix)
    await sim_step.register(cfg, registrar, ids, sizes)
    ledger = sim_runtime.Ledger()
    peers = sim_runtime.Peers()
    agents = []
    for i in range(2):
        node_id = f"sim-{i:03d}"
        conf = sim_config.node_settings(cfg, "memory", prefix, node_id, tmp_path)
        runtime = sim_runtime.SyntheticRuntime(
            node_id, ledger, dict(zip(ids, sizes, strict=True)), load_seconds=0.001
        )
        agents.append(
            sim_agent.Agent(conf, sim_runtime.CountingKV(shared, owns=False), runtime, peers)
        )
    timer = sim_meters.RouteTimer()
    try:
        for a in agents:
            await a.start()
        a0, a1 = agents
        for a in agents:  # each mirror shows both nodes
            assert await a.table.wait_until(shows_nodes(a.table, 2), 5.0)
        with timer.installed():
            for model_id in ids:
                answer = await a0.plane.call("ModelInfer", wire.rewrite_name(b"", model_id), (), 5)
                assert wire.read_name(answer) == model_id
            # a1 sees a0's copies, and sends a request for one of them there
            held_by_a0 = next(m for m in ids if ledger.holds("sim-000", m))
            assert await a1.table.wait_until(
                lambda: (
                    "sim-000" in (a1.table.model(held_by_a0) or records.ModelRecord("", "")).copies
                ),
                5.0,
            )
            forwarded = a1.plane.forwarded
            answer = await a1.plane.call("ModelInfer", wire.rewrite_name(b"", held_by_a0), (), 5)
            assert wire.read_name(answer) == held_by_a0
        assert a1.plane.forwarded == forwarded + 1
        assert ledger.loaded_models == set(ids)
        assert len(timer.ns) >= len(ids) + 1
        assert a0.kv.counts["txn"] > 0 and a0.kv.counts["watch_events"] > 0
        assert a0.instance_record().model_count == sum(1 for m in ids if ledger.holds("sim-000", m))
    finally:
        for a in agents:
            await a.stop()
    assert ledger.pairs() == set()  # the runtimes were stopped
    snap = await shared.list_prefix(f"{prefix}/")
    assert sim_meters.etcd_pairs([(i.key, i.value) for i in snap.items], prefix) == set()
