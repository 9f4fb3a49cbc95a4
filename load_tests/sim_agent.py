"""One simulated mesh node (:class:`Agent`) for the scenario
:mod:`load_tests.simulate`.

Why it exists: the simulation is only worth reading if each simulated node
is a mesh node, composed from the mesh's own parts in the order
``meshserve.node.Node._start`` composes them, with only the runtime, the
puller and the hop to a peer replaced (:mod:`load_tests.sim_runtime`).
``Node`` itself builds its runtime, puller, TLS and servers, so this module
composes the store, mirror, cache manager and data plane as ``Node`` does,
and starts the node's cluster tasks (membership, leader, janitor, scaler) and
builds its instance record with the very functions ``Node`` uses
(:func:`meshserve.node.start_cluster_tasks`, :func:`mesh.node.node_reports.instance_record`).
Its settings come from :func:`load_tests.sim_config.node_settings`,
which reads the scenario's configuration.
"""

from __future__ import annotations

import contextlib

from load_tests import sim_runtime
from mesh.core import clock, records, settings
from mesh.kv import placement_table as mesh_table
from mesh.kv import records_store
from mesh.node import cache_manager, dispatch, metrics, node_reports
from meshserve import node
from router import dataplane


class Agent:
    """One simulated mesh node: the parts of :class:`meshserve.node.Node`
    that place, route and talk to etcd, on a synthetic runtime and in-process
    peers."""

    def __init__(
        self,
        config: settings.Settings,
        kv: sim_runtime.CountingKV,
        runtime: sim_runtime.SyntheticRuntime,
        peers: sim_runtime.Peers,
    ) -> None:
        self.config = config
        self.kv = kv
        self.runtime = runtime
        self.peers = peers
        self.started_ms = 0
        self._stack = contextlib.AsyncExitStack()

    @property
    def node_id(self) -> str:
        return self.config.node.instance_id

    @property
    def endpoint(self) -> str:
        """What peers are told (the in-process directory's key, not a port)."""
        return f"sim:{self.node_id}"

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        # The order of meshserve/node.py Node._start, minus servers and TLS.
        cfg = self.config
        self._stack.push_async_callback(self.kv.close)
        self.store = records_store.RecordStore(self.kv, cfg.kv.prefix)
        self.table = mesh_table.PlacementTable(self.kv, cfg.kv.prefix)
        await self.table.start()
        self._stack.push_async_callback(self.table.stop)
        self.metrics = metrics.Metrics()
        puller = sim_runtime.SyntheticPuller(cfg.node.model_dir)
        await self.runtime.start()
        self._stack.push_async_callback(self.runtime.stop)
        self.manager = cache_manager.CacheManager(
            cfg, self.store, self.table, self.runtime, puller, self.metrics
        )
        await self.manager.start()
        self._stack.push_async_callback(self.manager.stop)
        self.dispatcher = dispatch.Dispatcher(cfg, self.table, self.manager)
        self.upstream = sim_runtime.RuntimeUpstream(self.runtime)
        self.plane = dataplane.DataPlane(
            cfg,
            self.table,
            self.manager,
            self.dispatcher,
            self.upstream,
            self.peers.upstream,
            runtime_name=self.runtime.name,
        )
        self.peers.add(self.endpoint, self.plane, self.manager)
        self._stack.callback(self.peers.remove, self.endpoint)
        self.started_ms = clock.now_ms()
        tasks = await node.start_cluster_tasks(
            self._stack,
            cfg,
            self.kv,
            self.store,
            self.table,
            self.manager,
            self.peers,
            self.instance_record,
        )
        self.membership, self.leader, self.scaler = tasks.membership, tasks.leader, tasks.scaler

    async def stop(self) -> None:
        await self._stack.aclose()

    def instance_record(self) -> records.InstanceRecord:
        return node_reports.instance_record(
            self.manager,
            self.endpoint,
            self.runtime,
            self.config.node.labels,
            "simulated",
            self.started_ms,
        )

    def evictions(self) -> int:
        v = self.metrics.registry.get_sample_value("modelmesh_model_evicted_total")
        return int(v or 0)
