"""One simulated mesh node (:class:`Agent`) for the scenario
:mod:`load_tests.simulate`.

Why it exists: the simulation is only worth reading if each simulated node
is a mesh node, composed from the mesh's own parts in the order
``meshserve.node.Node._start`` composes them, with only the runtime, the
puller and the hop to a peer replaced (:mod:`load_tests.sim_runtime`).
``Node`` itself cannot be reused (its ``_start`` builds the runtime, the
puller and the servers inside one method), so this module is the copy of
that composition, kept apart so that it can be read against
``meshserve/node.py`` line by line and tested on its own over the in-memory
KV store. Its settings come from :func:`load_tests.simulate.node_settings`,
which reads the scenario's configuration.
"""

from __future__ import annotations

import contextlib
import time

from load_tests import sim_runtime
from mesh import (
    cache_manager,
    dispatch,
    janitor,
    leader,
    membership,
    metrics,
    records,
    scaler,
    settings,
    store,
)
from mesh import table as mesh_table
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
        self.store = store.RecordStore(self.kv, cfg.kv.prefix)
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
            self.store,
            self.manager,
            self.dispatcher,
            self.upstream,
            self.peers.upstream,
            runtime_name=self.runtime.name,
        )
        self.peers.add(self.endpoint, self.plane, self.manager)
        self._stack.callback(self.peers.remove, self.endpoint)
        self.started_ms = int(time.time() * 1000)
        self.membership = membership.Membership(
            self.store, self.node_id, self.instance_record, cfg.kv.lease_ttl_seconds
        )
        await self.membership.start()
        self._stack.push_async_callback(self.membership.stop)
        self.manager.add_change_callback(self.membership.changed)
        self.leader = leader.Leader(
            self.kv, leader.leader_key(cfg.kv.prefix), self.node_id, cfg.kv.lease_ttl_seconds
        )
        await self.leader.start()
        self._stack.push_async_callback(self.leader.stop)
        sweeper = janitor.Janitor(
            self.store,
            self.table,
            self.leader,
            cfg.scaling.janitor_interval_seconds,
            cfg.scaling.dead_node_grace_seconds,
            cfg.cache.failure_expiry_seconds,
        )
        await sweeper.start()
        self._stack.push_async_callback(sweeper.stop)
        self.scaler = scaler.Scaler(
            cfg, self.table, self.manager, self.peers, lambda: self.leader.is_leader
        )
        await self.scaler.start()
        self._stack.push_async_callback(self.scaler.stop)

    async def stop(self) -> None:
        await self._stack.aclose()

    def instance_record(self) -> records.InstanceRecord:
        """As ``Node.instance_record`` (meshserve/node.py), with this agent's parts."""
        m = self.manager
        return records.InstanceRecord(
            endpoint=self.endpoint,
            capacity_bytes=m.capacity_bytes,
            used_bytes=m.used_bytes(),
            lru_time_ms=m.lru_time_ms(),
            model_count=m.model_count(),
            in_flight_loads=m.loading_count(),
            rpm=m.requests_per_minute(),
            labels=(
                f"rt:{self.runtime.name}",
                *(f"mt:{t}" for t in self.runtime.supported_model_types()),
                *self.config.node.labels,
            ),
            version="simulated",
            start_ms=self.started_ms,
            shutting_down=m.draining,
        )

    def evictions(self) -> int:
        v = self.metrics.registry.get_sample_value("modelmesh_model_evicted_total")
        return int(v or 0)
