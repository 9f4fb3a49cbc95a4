"""One mesh node, wired: etcd mirror, cache manager, runtime adapter, puller,
and the gRPC server on :8033 carrying the V2 data plane and the management API.

:class:`Node` owns the start order (etcd → runtime → cache → server) and the
stop order (the reverse, withdrawing this node's copies from etcd before the
runtime goes away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from importlib import metadata

import grpc

from mesh import (
    cache_manager,
    errors,
    etcd_kv,
    interfaces,
    management,
    management_grpc,
    membership,
    records,
    settings,
    store,
    table,
)
from puller import local
from router import dataplane, forward, servicer
from runtime_adapters import mlserver

log = logging.getLogger(__name__)


def version() -> str:
    try:
        return metadata.version("meshserve")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def make_runtime(config: settings.Settings) -> interfaces.RuntimeAdapter:
    """The runtime adapter the settings ask for."""
    if config.runtime.kind != "mlserver":
        raise errors.ConfigError(
            f"MESHSERVE_RUNTIME: {config.runtime.kind!r} is not a known runtime (known: mlserver)"
        )
    return mlserver.MLServerAdapter(
        mlserver.MLServerConfig(
            model_dir=config.node.model_dir,
            venv=config.runtime.venv / "mlserver",
            endpoint=config.runtime.endpoint,
            log_path=config.node.data_dir / "logs" / f"mlserver-{config.node.instance_id}.log",
            start_timeout_seconds=config.runtime.start_timeout_seconds,
            size_multiplier=config.cache.size_multiplier,
            min_model_size_bytes=config.cache.min_model_size_bytes,
            load_timeout_seconds=config.cache.load_timeout_seconds,
        )
    )


class Node:
    """A running mesh node."""

    def __init__(self, config: settings.Settings) -> None:
        self.config = config
        self.runtime = make_runtime(config)
        self.started_ms = 0
        self._stack = contextlib.AsyncExitStack()
        self._server: grpc.aio.Server | None = None
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
        cfg = self.config
        t0 = time.monotonic()
        kv = await etcd_kv.EtcdKV.connect(cfg.kv.endpoints)
        self._stack.push_async_callback(kv.close)
        self.store = store.RecordStore(kv, cfg.kv.prefix)
        self.table = table.PlacementTable(kv, cfg.kv.prefix)
        await self.table.start()
        self._stack.push_async_callback(self.table.stop)

        cfg.node.model_dir.mkdir(parents=True, exist_ok=True)
        puller = local.LocalPuller(cfg.node.model_dir, cfg.node.models_root)
        puller.sweep()
        await self.runtime.start()
        self._stack.push_async_callback(self.runtime.stop)

        self.manager = cache_manager.CacheManager(cfg, self.store, self.table, self.runtime, puller)
        await self.manager.start()
        self._stack.push_async_callback(self.manager.stop)
        self.management = management.Management(cfg, self.store, self.table, self.manager)
        self._stack.push_async_callback(self.management.stop)

        upstream = forward.GrpcUpstream(self.runtime.grpc_target, cfg.service.max_message_bytes)
        self._stack.push_async_callback(upstream.close)
        plane = dataplane.DataPlane(
            self.table, self.manager, upstream, int(cfg.cache.failure_expiry_seconds * 1000)
        )
        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", cfg.service.max_message_bytes),
                ("grpc.max_receive_message_length", cfg.service.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers([servicer.InferenceService(plane, self.ready, version())])
        management_grpc.add_to_server(server, self.management)
        address = f"{cfg.service.host}:{cfg.service.grpc_port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise errors.ConfigError(f"cannot listen on {address}: {e}") from None
        await server.start()
        self._server = server
        self._stack.push_async_callback(self._stop_server)

        self.started_ms = int(time.time() * 1000)
        self.membership = membership.Membership(
            self.store,
            cfg.node.instance_id,
            self.instance_record,
            cfg.kv.lease_ttl_seconds,
        )
        await self.membership.start()
        self._stack.push_async_callback(self.membership.stop)
        self.manager.add_change_callback(self.membership.changed)
        log.info(
            "node %s ready on %s in %.0f ms (runtime %s at %s)",
            cfg.node.instance_id,
            self.endpoint,
            (time.monotonic() - t0) * 1000,
            self.runtime.name,
            self.runtime.grpc_target,
        )

    async def _stop_server(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=2.0)

    async def stop(self) -> None:
        await self._stack.aclose()

    async def ready(self) -> bool:
        """Serving: the runtime answers and the etcd mirror is live."""
        return self._server is not None and await self.runtime.ready()

    def instance_record(self) -> records.InstanceRecord:
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
            version=version(),
            start_ms=self.started_ms,
        )


async def run_until_signalled(node: Node, stop: asyncio.Event) -> None:
    """Run ``node`` until ``stop`` is set, then stop it."""
    await node.start()
    try:
        await stop.wait()
    finally:
        await node.stop()
