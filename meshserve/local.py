"""``meshserve up``: a whole mesh on this machine.

Starts an etcd (unless one is given), and one mesh node with its own runtime
process, all under one data folder::

    <data-dir>/etcd/        etcd's data: registrations survive a restart
    <data-dir>/models/      the runtime's model repository (copies of models)
    <data-dir>/logs/        etcd's and the runtime's output

Children run in their own process groups and die with this process, so
Ctrl-C, SIGTERM or even SIGKILL of ``meshserve up`` leaves no orphan.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pathlib
import socket
import time

from mesh import etcd_server, settings
from meshserve import node

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LocalMeshOptions:
    """What ``meshserve up`` was asked for."""

    grpc_port: int = 8033
    """Port of the node's gRPC service."""
    host: str = "127.0.0.1"
    """Address the node listens on."""
    runtime: str = "mlserver"
    """Which runtime the node runs."""
    capacity_bytes: int = settings.CacheSettings().capacity_bytes
    """Bytes of models the node may hold."""
    data_dir: pathlib.Path = pathlib.Path(".data")
    """Where etcd data, model copies and logs go."""
    etcd: str = ""
    """``host:port`` of an etcd to use instead of starting one."""
    models_root: pathlib.Path = pathlib.Path(".")
    """Base of relative model paths in Predictors."""
    runtimes_dir: pathlib.Path = settings.RuntimeSettings().venv
    """Folder of the runtimes' virtual environments."""
    prefix: str = "mm"
    """etcd key prefix."""


class LocalMesh:
    """An etcd and one node, started and stopped together."""

    def __init__(self, options: LocalMeshOptions) -> None:
        self.options = options
        self.etcd: etcd_server.EtcdServer | None = None
        self.node: node.Node | None = None

    @property
    def etcd_endpoint(self) -> str:
        return self.options.etcd or (self.etcd.endpoint if self.etcd else "")

    def node_settings(self) -> settings.Settings:
        o = self.options
        data_dir = o.data_dir.resolve()
        return settings.Settings(
            kv=settings.KVSettings(endpoints=(self.etcd_endpoint,), prefix=o.prefix),
            service=settings.ServiceSettings(
                host=o.host, grpc_port=o.grpc_port, advertise_host=o.host
            ),
            cache=settings.CacheSettings(capacity_bytes=o.capacity_bytes),
            node=settings.NodeSettings(
                instance_id=f"{socket.gethostname()}-{o.grpc_port}",
                data_dir=data_dir,
                models_root=o.models_root.resolve(),
            ),
            runtime=settings.RuntimeSettings(kind=o.runtime, venv=o.runtimes_dir.resolve()),
        )

    async def start(self) -> None:
        t0 = time.monotonic()
        o = self.options
        o.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if not o.etcd:
                self.etcd = etcd_server.EtcdServer(
                    o.data_dir.resolve() / "etcd",
                    log_path=o.data_dir.resolve() / "logs" / "etcd.log",
                )
                await asyncio.to_thread(self.etcd.start)
            self.node = node.Node(self.node_settings())
            await self.node.start()
        except BaseException:
            await self.stop()
            raise
        log.info("local mesh up in %.1f s", time.monotonic() - t0)

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop()
            self.node = None
        if self.etcd is not None:
            await asyncio.to_thread(self.etcd.stop)
            self.etcd = None
