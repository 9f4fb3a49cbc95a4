"""``meshserve up``: a whole mesh on this machine, as it runs in production.

Why it exists: a user (or the demo, or a test) wants a real mesh without a
cluster. In production every mesh node is its own process next to its own
runtime, and the nodes only agree through etcd; :class:`LocalMesh` runs
exactly that on one machine, so what works here works across pods. It starts
an etcd (unless one is given) and N ``meshserve node`` processes, node ``i``
listening on ``grpc_port + i``, each configured only through the environment
variables a node reads in a pod (:func:`mesh.core.settings.from_env`), each
starting its own MLServer process and holding its own capacity. Everything
lives under one data folder::

    <data-dir>/etcd/                  etcd's data: registrations survive a restart
    <data-dir>/node-<i>/models/       node i's runtime model repository (its copies)
    <data-dir>/node-<i>/logs/         node i's MLServer output
    <data-dir>/logs/node-<i>.log      node i's own output (started afresh each run)
    <data-dir>/logs/etcd.log          etcd's output

:meth:`LocalMesh.start` returns once every node answers V2 ``ServerReady``
and every node sees every other in its placement table; if a node exits or
is not ready in time, it stops everything and raises with the end of that
node's log. :meth:`LocalMesh.stop` sends SIGTERM to every node at once,
waits for them together (then SIGKILLs what is left), then stops etcd.

Every child runs in its own process group and dies with its parent
(:class:`mesh.edges.processes.ChildProcess`: ``PR_SET_PDEATHSIG``): a node stops
its MLServer on SIGTERM, and an MLServer dies with its node even if the node
is SIGKILLed, so Ctrl-C, SIGTERM or even SIGKILL of ``meshserve up`` leaves
no orphan. Children are started from the event loop's own thread, never from
a worker thread: the kernel sends PDEATHSIG when the *thread* that forked the
child exits, and the loop's thread lives as long as the mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from mesh.core import errors, settings
from mesh.edges import etcd_process, ports, processes
from mesh.edges.proto import meshserve_admin_pb2 as admin_pb2
from mesh.edges.proto import meshserve_admin_pb2_grpc as admin_pb2_grpc
from meshserve import runtime_choice

log = logging.getLogger(__name__)

_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
_POLL_SECONDS = 0.1
# A probe channel retries its connection quickly: a node listens only once its
# MLServer is ready, and gRPC's default back-off (up to 2 min) would notice
# that late.
_PROBE_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
# Settings from ``up``'s own environment that must not reach the nodes: each
# node starts a runtime of its own.
_NOT_INHERITED = ("MESHSERVE_RUNTIME_ENDPOINT",)


@dataclasses.dataclass(frozen=True)
class LocalMeshOptions:
    """What ``meshserve up`` was asked for."""

    nodes: int = 1
    """How many mesh nodes to run, each a ``meshserve node`` process with its
    own runtime process and its own capacity (``--nodes``)."""
    grpc_port: int = 8033
    """Port of node 0's gRPC service; node ``i`` listens on ``grpc_port + i``
    (``--grpc-port``)."""
    rest_port: int = 8008
    """Port of node 0's V2 REST endpoint, node ``i`` on ``rest_port + i``
    (``--rest-port``; -1: off)."""
    metrics_port: int = 2112
    """Port of node 0's Prometheus metrics, node ``i`` on ``metrics_port + i``
    (``--metrics-port``; -1: off)."""
    probe_port: int = 8089
    """Port of node 0's ``/live`` and ``/ready``, node ``i`` on ``probe_port + i``
    (``--probe-port``; -1: off)."""
    host: str = "127.0.0.1"
    """Address the nodes listen on (``--host``); peers and clients on this
    machine reach them there, or at 127.0.0.1 for a wildcard address."""
    runtime: str = "mlserver"
    """Which runtime each node runs (``--runtime``): one name for every node
    (``triton``), or a mixed pool with a count per runtime
    (``mlserver=2,triton=1``, whose counts then give the number of nodes)."""
    capacity_bytes: int = 1024**3
    """Bytes of models each node may hold (``--capacity``; 0: measured from
    the runtime's memory — on one machine every node would claim all of it,
    hence a fixed default here)."""
    data_dir: pathlib.Path = pathlib.Path(".data")
    """Where etcd data, model copies and logs go (``--data-dir``)."""
    etcd: str = ""
    """``host:port`` of an etcd to use instead of starting one (``--etcd``)."""
    models_root: pathlib.Path = pathlib.Path(".")
    """Base of relative model paths in Predictors (``--models-root``)."""
    storage_config: pathlib.Path | None = None
    """The storage-config folder, one JSON file per storage key
    (``--storage-config``); passed to each node as ``MESHSERVE_STORAGE_CONFIG``."""
    runtimes_dir: pathlib.Path = settings.RuntimeSettings().venv
    """Folder of the runtimes' virtual environments."""
    prefix: str = "mm"
    """etcd key prefix."""
    log_level: str = "INFO"
    """Log level of the node processes."""
    ready_timeout_seconds: float = 180.0
    """Longest wait, from the start of the nodes, for all of them to be ready."""
    stop_timeout_seconds: float = 45.0
    """Longest wait for the nodes to stop after SIGTERM before SIGKILL (a
    node may first spend up to its drain timeout, 30 s by default, handing
    its models over to nodes that stay)."""

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise errors.ConfigError(f"--nodes: {self.nodes} must be at least 1")
        plan = runtime_plan(self.runtime, self.nodes)
        if len(plan) != self.nodes:
            if self.nodes != 1:
                raise errors.ConfigError(
                    f"--runtime {self.runtime} makes {len(plan)} nodes, but --nodes says "
                    f"{self.nodes}: give one or the other"
                )
            object.__setattr__(self, "nodes", len(plan))  # the pool's counts decide
        last = self.grpc_port + self.nodes - 1
        if self.grpc_port < 1 or last > 65535:
            raise errors.ConfigError(
                f"--grpc-port: {self.nodes} node(s) from port {self.grpc_port} "
                "need ports between 1 and 65535"
            )


def runtime_plan(spec: str, nodes: int) -> tuple[str, ...]:
    """The runtime of each node, from ``--runtime`` (pure)."""
    if "=" not in spec:
        name = spec.strip()
        if name not in runtime_choice.RUNTIMES:
            known = ", ".join(sorted(runtime_choice.RUNTIMES))
            raise errors.ConfigError(f"--runtime: {name!r} is not a known runtime (known: {known})")
        return (name,) * nodes
    plan: list[str] = []
    for part in spec.split(","):
        name, _, count = part.partition("=")
        name = name.strip()
        if name not in runtime_choice.RUNTIMES or not count.strip().isdigit() or int(count) < 1:
            raise errors.ConfigError(
                f"--runtime: {part!r} must be <runtime>=<count> with a runtime among "
                f"{', '.join(sorted(runtime_choice.RUNTIMES))} and a count of at least 1"
            )
        plan += [name] * int(count)
    return tuple(plan)


def _nth_port(base: int, index: int) -> str:
    """Node ``index``'s port from node 0's (-1, off, and 0, any free port, stay)."""
    return str(base if base <= 0 else base + index)


@dataclasses.dataclass(frozen=True)
class LocalNode:
    """One ``meshserve node`` process of a :class:`LocalMesh`."""

    index: int
    """Position in the mesh: 0 for the first node."""
    port: int
    """Its gRPC port (``grpc_port + index``)."""
    endpoint: str
    """``host:port`` where clients and peers reach it."""
    instance_id: str
    """Its id in the placement table: ``<hostname>-<port>``, the same at
    every start, so a restart is the same node."""
    process: processes.ChildProcess
    """The process; its output is in ``process.log_path``."""

    @property
    def log_path(self) -> pathlib.Path:
        return self.process.log_path

    def describe(self) -> str:
        return f"node {self.index} ({self.endpoint})"


class LocalMesh:
    """An etcd and N node processes, started and stopped together."""

    def __init__(self, options: LocalMeshOptions) -> None:
        self.options = options
        self.etcd: etcd_process.EtcdServer | None = None
        self.nodes: list[LocalNode] = []
        """The running nodes, in port order (empty before start, after stop)."""

    @property
    def etcd_endpoint(self) -> str:
        """``host:port`` of the etcd the nodes use."""
        return self.options.etcd or (self.etcd.endpoint if self.etcd else "")

    @property
    def node_endpoints(self) -> list[str]:
        """``host:port`` of each node, node 0 first."""
        return [n.endpoint for n in self.nodes]

    @property
    def client_host(self) -> str:
        """Where clients on this machine reach the nodes."""
        host = self.options.host
        return "127.0.0.1" if host in _WILDCARD_HOSTS else host

    def instance_id(self, index: int) -> str:
        return f"{socket.gethostname()}-{self.options.grpc_port + index}"

    def node_env(self, index: int) -> dict[str, str]:
        """The environment of node ``index``: this process's own, minus the
        settings that must differ per node, plus the node's settings."""
        o = self.options
        data_dir = o.data_dir.resolve()
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env.update(
            {
                "KV_STORE": f"etcd:{self.etcd_endpoint}",
                "MM_KVSTORE_PREFIX": o.prefix,
                "MM_SVC_GRPC_PORT": str(o.grpc_port + index),
                "REST_PROXY_LISTEN_PORT": _nth_port(o.rest_port, index),
                "MESHSERVE_METRICS_PORT": _nth_port(o.metrics_port, index),
                "MESHSERVE_PROBE_PORT": _nth_port(o.probe_port, index),
                "MM_INSTANCE_ID": self.instance_id(index),
                "MESHSERVE_HOST": o.host,
                "MESHSERVE_ADVERTISE_HOST": self.client_host,
                "MESHSERVE_CAPACITY": str(o.capacity_bytes),
                "MESHSERVE_DATA_DIR": str(data_dir / f"node-{index}"),
                "MESHSERVE_MODELS_ROOT": str(o.models_root.resolve()),
                "MESHSERVE_STORAGE_CONFIG": (
                    str(o.storage_config.resolve()) if o.storage_config else ""
                ),
                "MESHSERVE_RUNTIME": runtime_plan(o.runtime, o.nodes)[index],
                "MESHSERVE_RUNTIMES_DIR": str(o.runtimes_dir.resolve()),
                "MESHSERVE_LOG_LEVEL": o.log_level,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    async def start(self) -> None:
        """Start etcd and the nodes and wait until all are ready; on failure
        (or cancellation), stop what had started and raise."""
        t0 = time.monotonic()
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        log.info("local mesh of %d node(s) up in %.1f s", len(self.nodes), time.monotonic() - t0)

    async def _start(self) -> None:
        o = self.options
        data_dir = o.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        for i in range(o.nodes):
            port = o.grpc_port + i
            if ports.port_open(self.client_host, port):
                raise errors.ConfigError(
                    f"--grpc-port: port {port} (node {i}) is taken; pass another --grpc-port"
                )
        if not o.etcd:
            self.etcd = etcd_process.EtcdServer(
                data_dir / "etcd", log_path=data_dir / "logs" / "etcd.log"
            )
            # In this thread (see the module's docstring); it takes well under
            # a second, before anything else runs.
            self.etcd.start()
        for i in range(o.nodes):
            port = o.grpc_port + i
            log_path = data_dir / "logs" / f"node-{i}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_bytes(b"")
            process = processes.ChildProcess(
                f"meshserve node {i}",
                # -P: a folder in the working directory named like one of
                # meshserve's packages (--data-dir mesh) must not shadow it.
                [sys.executable, "-P", "-m", "meshserve.cli", "node"],
                log_path,
                env=self.node_env(i),
            )
            process.start()
            self.nodes.append(
                LocalNode(
                    index=i,
                    port=port,
                    endpoint=f"{self.client_host}:{port}",
                    instance_id=self.instance_id(i),
                    process=process,
                )
            )
        await self._wait_ready(time.monotonic() + o.ready_timeout_seconds)

    async def _wait_ready(self, deadline: float) -> None:
        """Until every node answers ``ServerReady`` and lists every node's
        instance record (each node's mirror of the table knows them all)."""
        channels = {
            n.index: grpc.aio.insecure_channel(n.endpoint, options=_PROBE_CHANNEL_OPTIONS)
            for n in self.nodes
        }
        try:
            last: dict[int, str] = {n.index: "no answer yet" for n in self.nodes}
            waiting = list(self.nodes)
            while waiting:
                for n in list(waiting):
                    if not n.process.running():
                        raise errors.RuntimeUnavailable(
                            f"{n.describe()} exited with status {n.process.returncode()} "
                            f"before it was ready; its log ({n.log_path}) ends:\n"
                            f"{n.process.log_tail()}"
                        )
                    ok, last[n.index] = await self._probe(channels[n.index], n)
                    if ok:
                        waiting.remove(n)
                if waiting and time.monotonic() >= deadline:
                    n = waiting[0]
                    raise errors.RuntimeUnavailable(
                        f"{n.describe()} was not ready within "
                        f"{self.options.ready_timeout_seconds:g} s ({last[n.index]}); "
                        f"its log ({n.log_path}) ends:\n{n.process.log_tail()}"
                    )
                if waiting:
                    await asyncio.sleep(_POLL_SECONDS)
        finally:
            for channel in channels.values():
                await channel.close()

    async def _probe(self, channel: grpc.aio.Channel, n: LocalNode) -> tuple[bool, str]:
        """``(ready, what was seen)`` for node ``n``."""
        try:
            ready = await service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(
                service_pb2.ServerReadyRequest(), timeout=1.0
            )
            if not ready.ready:
                return False, "ServerReady said false"
            listed: Any = await admin_pb2_grpc.MeshAdminStub(channel).ListInstances(
                admin_pb2.ListRequest(), timeout=1.0
            )
        except grpc.aio.AioRpcError as e:
            return False, f"{e.code().name}: {e.details()}"
        known = {i.instance_id for i in listed.instances}
        missing = [m.instance_id for m in self.nodes if m.instance_id not in known]
        if missing:
            return False, f"ready, but does not see {', '.join(missing)} yet"
        return True, "ready"

    def exited(self) -> list[LocalNode]:
        """The nodes whose process has ended."""
        return [n for n in self.nodes if not n.process.running()]

    async def stop(self) -> None:
        """Stop every node (SIGTERM to all, then SIGKILL what is left after
        ``stop_timeout_seconds``), then etcd."""
        nodes, self.nodes = self.nodes, []
        await stop_all([n.process for n in nodes], self.options.stop_timeout_seconds)
        if self.etcd is not None:
            await asyncio.to_thread(self.etcd.stop)
            self.etcd = None


async def stop_all(children: Sequence[processes.ChildProcess], timeout: float) -> None:
    """SIGTERM every child's process group at once, wait for all of them
    together up to ``timeout`` seconds, then SIGKILL the groups still there."""
    for child in children:
        if child.running() and child.pid is not None:
            # Each child leads its own process group (ChildProcess).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(c.running() for c in children):
            break
        await asyncio.sleep(0.05)  # a child's exit is no event to wait on
    for child in children:
        if child.running():
            log.warning("%s did not stop within %g s: SIGKILL", child.name, timeout)
        # Reaps the ones that ended; SIGKILLs the rest and anything left in
        # their groups.
        child.stop(timeout=0)
