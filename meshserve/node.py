"""One mesh node, wired: etcd mirror, cache manager, runtime adapter, puller,
and the gRPC server on :8033 carrying the V2 data plane and the management API.

:class:`Node` owns the start order (TLS files → etcd → runtime → cache →
server) and the stop order (the reverse, withdrawing this node's copies from
etcd before the runtime goes away).

It also applies the production edges consistently, in one place:

- TLS (:mod:`mesh.edges.tls`): the files are read and checked before anything
  starts, so a bad path fails the node at once naming the variable; the same
  watched material feeds :8033, :8008 and the peer channels.
- Message size: clients get ``MM_SVC_GRPC_MAX_MSG_SIZE`` (checked by the data
  plane and the REST body limit); every gRPC hop (the :8033 server, peer
  channels, the runtime channel, MLServer's own limit) is configured with
  :func:`router.client_messages.transport_limit` of it.
- Payload log (:mod:`mesh.edges.payload_log`) and structured log lines
  (:class:`router.servicer.ModelLogContext`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from importlib import metadata

import grpc

from mesh.core import clock, disk_cache_settings, errors, interfaces, records, settings
from mesh.edges import (
    health_grpc,
    management_grpc,
    node_tls,
    ops_http,
    payload_log,
    peers,
    ports,
    reflection_grpc,
    tls,
)
from mesh.kv import etcd_kv, placement_table, records_store
from mesh.kv import kv_store as kv_api
from mesh.node import (
    cache_manager,
    dispatch,
    handover,
    janitor,
    leader,
    management,
    membership,
    metrics,
    node_reports,
    scaler,
)
from meshserve import runtime_choice, stop_steps
from puller import factory
from router import (
    client_messages,
    dataplane,
    forward,
    model_repository,
    model_statistics,
    rest,
    servicer,
)
from runtime_adapters import memory

log = logging.getLogger(__name__)

SERVICES = (servicer.SERVICE, *management_grpc.SERVICES)
"""The services a client calls on :8033 (health checks and reflection name them)."""


def version() -> str:
    try:
        return metadata.version("meshserve")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Node:
    """A running mesh node."""

    def __init__(self, config: settings.Settings) -> None:
        if config.service.rest_port == 0:
            # Chosen now, not at bind time: the runtime started before the
            # REST server is told where it is (an explainer calls through it).
            service = dataclasses.replace(
                config.service, rest_port=ports.free_port(config.service.host)
            )
            config = dataclasses.replace(config, service=service)
        self.config = config
        self.runtime = runtime_choice.make_runtime(config)
        self.started_ms = 0
        # Each step of the stop gets the drain's time and 15 s more: the
        # gRPC server's stop alone may take the drain's grace.
        self._stack = stop_steps.StopSteps(config.scaling.drain_timeout_seconds + 15.0)
        self._server: grpc.aio.Server | None = None
        self._started = False
        self._drain_deadline: float | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"{self.config.service.advertise_host}:{self.port}"

    async def start(self) -> None:
        """Start everything; on failure, stop what had started and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        t0 = time.monotonic()
        self.tls = node_tls.load_tls(self.config.tls)
        limit = self.config.service.max_message_bytes
        hop_limit = client_messages.transport_limit(limit)
        kv = await self._start_store()
        dispatcher = await self._start_cache(hop_limit)
        await self._start_data_plane(dispatcher, hop_limit)
        await self._start_grpc(hop_limit)
        await self._start_http(limit)
        cfg = self.config
        self.started_ms = clock.now_ms()
        tasks = await start_cluster_tasks(
            self._stack,
            cfg,
            kv,
            self.store,
            self.table,
            self.manager,
            self.peers,
            self.instance_record,
        )
        self.membership, self.leader, self.scaler = tasks.membership, tasks.leader, tasks.scaler
        self._started = True
        log.info(
            "node %s ready on %s in %.0f ms (runtime %s at %s; %s)",
            cfg.node.instance_id,
            self.endpoint,
            (time.monotonic() - t0) * 1000,
            self.runtime.name,
            self.runtime.grpc_target,
            node_tls.describe_tls(cfg.tls),
        )

    async def _start_store(self) -> kv_api.KVStore:
        """The etcd client, the record store and the placement-table mirror."""
        cfg = self.config
        kv = await etcd_kv.EtcdKV.connect(cfg.kv.endpoints, tls=self.tls.etcd)
        self._stack.push_async_callback(kv.close)
        self.store = records_store.RecordStore(kv, cfg.kv.prefix)
        self.table = placement_table.PlacementTable(kv, cfg.kv.prefix)
        await self.table.start()
        self._stack.push_async_callback(self.table.stop)
        return kv

    async def _start_cache(self, hop_limit: int) -> dispatch.Dispatcher:
        """The runtime, the cache manager over it, the peers and management
        (capacity measured first when the settings say 0)."""
        cfg = self.config
        cfg.node.model_dir.mkdir(parents=True, exist_ok=True)
        # Creates the model folder and sweeps what an earlier run left there.
        self.metrics = metrics.Metrics(per_model=cfg.service.metrics_per_model)
        free = shutil.disk_usage(cfg.node.model_dir).free
        puller = factory.make_puller(
            cfg.node.model_dir,
            cfg.node.models_root,
            cfg.node.storage_config_dir,
            on_pulled=lambda r: self.metrics.pulled(r.model_id, r.seconds * 1000, r.bytes),
            disk_cache_bytes=disk_cache_settings.budget_bytes(cfg.disk_cache, free),
            on_disk_event=self.metrics.disk_cache,
        )
        await self.runtime.start()
        self._stack.push_async_callback(self.runtime.stop)
        if cfg.cache.capacity_bytes == 0:
            cfg = self.config = dataclasses.replace(
                cfg, cache=dataclasses.replace(cfg.cache, capacity_bytes=self._measure_capacity())
            )

        self.manager = cache_manager.CacheManager(
            cfg, self.store, self.table, self.runtime, puller, self.metrics
        )
        puller.on_dropped = self.manager.dropped_from_disk
        await self.manager.start()
        self._stack.push_async_callback(self.manager.stop)
        self.peers = self._peers(hop_limit)
        self._stack.push_async_callback(self.peers.close)
        dispatcher = dispatch.Dispatcher(cfg, self.table, self.manager)
        self.management = management.Management(
            cfg, self.store, self.table, self.manager, dispatcher, self.peers
        )
        self._stack.push_async_callback(self.management.stop)
        return dispatcher

    async def _start_data_plane(self, dispatcher: dispatch.Dispatcher, hop_limit: int) -> None:
        """The V2 data plane, its upstreams and the payload log."""
        cfg = self.config
        upstream = forward.GrpcUpstream.open(self.runtime.grpc_target, hop_limit)
        self._stack.push_async_callback(upstream.close)
        peer_upstreams = forward.PeerUpstreams(self.peers)
        self.payload_log: payload_log.PayloadLogger | None = None
        if cfg.payload_log.target:
            self.payload_log = payload_log.PayloadLogger(
                payload_log.sink_for(cfg.payload_log.target, f"meshserve/{cfg.node.instance_id}"),
                queue_size=cfg.payload_log.queue_size,
                queue_bytes=cfg.payload_log.queue_bytes,
                registry=self.metrics.registry,
            )
            await self.payload_log.start()
            self._stack.push_async_callback(self.payload_log.stop)
        self.plane = dataplane.DataPlane(
            cfg,
            self.table,
            self.manager,
            dispatcher,
            upstream,
            peer_upstreams.get,
            runtime_name=self.runtime.name,
            payloads=self.payload_log,
        )
        self.statistics = model_statistics.StatisticsService(
            self.table, self.metrics.model_stats, cfg.node.instance_id, peer_upstreams.get
        )
        self.repository = model_repository.ModelRepository(
            self.table,
            self.manager,
            lambda model_id: self.management.ensure_loaded(model_id, sync=True),
            cfg.node.instance_id,
            peer_upstreams.get,
            int(cfg.cache.failure_expiry_seconds * 1000),
        )

    async def _start_grpc(self, hop_limit: int) -> None:
        """The gRPC server on :8033: inference and management."""
        cfg = self.config
        server = grpc.aio.server(
            interceptors=[servicer.ModelLogContext()],
            options=[
                ("grpc.max_send_message_length", hop_limit),
                ("grpc.max_receive_message_length", hop_limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers(
            [
                servicer.InferenceService(
                    self.plane,
                    self.ready,
                    version(),
                    self.metrics,
                    self.statistics,
                    self.repository,
                ),
                health_grpc.HealthService(self.serving, frozenset(SERVICES)),
                reflection_grpc.ReflectionService(
                    [*SERVICES, health_grpc.SERVICE],
                    [servicer.PROTO_FILE, *management_grpc.PROTO_FILES],
                ),
            ]
        )
        management_grpc.add_to_server(server, self.management, self.manager)
        address = f"{cfg.service.host}:{cfg.service.grpc_port}"
        try:
            if self.tls.server is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(
                    address, tls.grpc_server_credentials(self.tls.server)
                )
        except RuntimeError as e:
            raise errors.ConfigError(f"cannot listen on {address}: {e}") from None
        await server.start()
        self._server = server
        self._stack.push_async_callback(self._stop_server)

    async def _start_http(self, limit: int) -> None:
        """REST, the ops server (metrics, probes, drain) and TLS reloading."""
        cfg = self.config
        if cfg.service.rest_port >= 0:
            self.rest = rest.RestServer(
                self.plane,
                self.ready,
                version(),
                cfg.service.host,
                cfg.service.rest_port,
                limit,
                ssl_context=tls.rest_ssl_context(self.tls.server) if self.tls.server else None,
                statistics=self.statistics,
                repository=self.repository,
            )
            await self.rest.start()
            self._stack.push_async_callback(self.rest.stop)
        self.metrics.watch_state(self.metrics_state)
        self.ops = ops_http.OpsServer(
            self.metrics,
            self.readiness,
            cfg.service.host,
            cfg.service.metrics_port,
            cfg.service.probe_port,
            drain=self._drain,
        )
        await self.ops.start()
        self._stack.push_async_callback(self.ops.stop)
        reloader = tls.Reloader(self.tls.watched(), cfg.tls.reload_interval_seconds)
        await reloader.start()
        self._stack.push_async_callback(reloader.stop)

    def _peers(self, hop_limit: int) -> peers.Peers:
        """Channels to peers: mutual TLS when configured, following rotations."""
        watched = self.tls.peers
        if watched is None:
            return peers.Peers(hop_limit)
        p = peers.Peers(
            hop_limit,
            tls.grpc_channel_credentials(watched.value),
            tls.channel_options(watched.value),
        )
        watched.add_listener(
            lambda m: p.use_credentials(tls.grpc_channel_credentials(m), tls.channel_options(m))
        )
        return p

    def _measure_capacity(self) -> int:
        """Capacity from the runtime's memory (settings say 0: measure it)."""
        buffer = self.config.cache.capacity_buffer_fraction
        measured = memory.gpu_capacity_bytes(buffer) if self.runtime.counts_gpu_memory else None
        if measured is None:
            idle = memory.tree_rss(self.runtime.pid) if self.runtime.pid else None
            measured = memory.host_capacity_bytes(None, buffer, idle or 0)
        log.info("capacity measured from the runtime's memory: %d bytes", measured)
        return measured

    async def _stop_server(self) -> None:
        """Refuse new calls; calls in flight get until the drain timeout
        (counted from the start of the drain), and at least 2 s."""
        if self._server is not None:
            grace = 2.0
            if self._drain_deadline is not None:
                grace = max(grace, self._drain_deadline - asyncio.get_running_loop().time())
            await self._server.stop(grace=grace)

    @property
    def stop_overruns(self) -> list[str]:
        """Steps of the last stop that ran past their time (see
        :mod:`meshserve.stop_steps`): empty when the node stopped cleanly."""
        return self._stack.overruns

    async def stop(self) -> None:
        """Leave the mesh: drain (if it had started), then stop every part."""
        if self._started:
            self._started = False
            try:
                await self._drain()
            except Exception:
                log.exception("draining node %s failed", self.config.node.instance_id)
        await self._stack.aclose()

    async def _drain(self) -> None:
        """Stop taking loads, tell the mesh, and have another node load the
        recently used models whose only copy is here."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._drain_deadline = loop.time() + cfg.scaling.drain_timeout_seconds
        self.manager.draining = True
        await self.membership.publish_now()
        recent = self.manager.recently_used(cfg.scaling.handover_window_seconds)
        moved = await handover.hand_over(cfg, recent, self.table, self.peers)
        log.info("node %s drained: %d models handed over", cfg.node.instance_id, moved)

    async def ready(self) -> bool:
        """Serving: the runtime answers (V2 ServerReady)."""
        return self._server is not None and await self.runtime.ready()

    async def readiness(self) -> tuple[bool, str]:
        """For ``/ready``: the runtime answers and etcd is reachable."""
        if not await self.ready():
            return False, f"runtime {self.runtime.name} is not ready"
        try:
            await self.store.get_instance(self.config.node.instance_id)
        except errors.StoreUnavailable as e:
            return False, e.message
        return True, ""

    async def serving(self) -> bool:
        """For gRPC health checks: ready as ``/ready`` says."""
        return (await self.readiness())[0]

    def metrics_state(self) -> metrics.NodeState:
        return node_reports.metrics_state(
            self.manager, self.table, self.config.cache.failure_expiry_seconds
        )

    def instance_record(self) -> records.InstanceRecord:
        return node_reports.instance_record(
            self.manager,
            self.endpoint,
            self.runtime,
            self.config.node.labels,
            version(),
            self.started_ms,
        )


@dataclasses.dataclass(frozen=True)
class ClusterTasks:
    """The background tasks a node runs for the mesh as a whole, besides
    serving requests (membership, leader election, janitor, scaler): the
    handles of those that other parts of the node ask."""

    membership: membership.Membership
    """Its instance record, under a lease."""
    leader: leader.Leader
    """The election of the node that prunes dead nodes and keeps minimums."""
    scaler: scaler.Scaler
    """Extra copies for busy models, and minimum copies when leading."""


async def start_cluster_tasks(
    stack: contextlib.AsyncExitStack,
    config: settings.Settings,
    kv: kv_api.KVStore,
    record_store: records_store.RecordStore,
    mirror: placement_table.PlacementTable,
    manager: cache_manager.CacheManager,
    peer_loader: interfaces.PeerLoader,
    snapshot: Callable[[], records.InstanceRecord],
) -> ClusterTasks:
    """Start a node's cluster tasks in order (membership, leader, janitor, scaler),
    each stopped by ``stack``. Shared with the benchmarks' simulated nodes
    (``load_tests/sim_agent.py``), so that they run the very same wiring."""
    node_id = config.node.instance_id
    member = membership.Membership(record_store, node_id, snapshot, config.kv.lease_ttl_seconds)
    await member.start()
    stack.push_async_callback(member.stop)
    manager.add_change_callback(member.changed)
    elected = leader.Leader(
        kv, leader.leader_key(config.kv.prefix), node_id, config.kv.lease_ttl_seconds
    )
    await elected.start()
    stack.push_async_callback(elected.stop)
    sweeper = janitor.Janitor(
        record_store,
        mirror,
        elected,
        config.scaling.janitor_interval_seconds,
        config.scaling.dead_node_grace_seconds,
        config.cache.failure_expiry_seconds,
    )
    await sweeper.start()
    stack.push_async_callback(sweeper.stop)
    scaling = scaler.Scaler(config, mirror, manager, peer_loader, lambda: elected.is_leader)
    await scaling.start()
    stack.push_async_callback(scaling.stop)
    return ClusterTasks(member, elected, scaling)


async def run_until_signalled(node: Node, stop: asyncio.Event) -> None:
    """Run ``node`` until ``stop`` is set, then stop it."""
    await node.start()
    try:
        await stop.wait()
    finally:
        await node.stop()
