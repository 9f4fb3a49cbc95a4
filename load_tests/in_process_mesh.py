"""An etcd and one mesh node serving from an event loop in a background
thread of this process: the local mesh :mod:`load_tests.latency` times.

Why it exists: the latency benchmark calls the node's endpoint and its
MLServer's own endpoint from synchronous clients on the main thread, so the
node must serve from a loop of its own, with its runtime's endpoint at hand
(unlike the node processes of ``meshserve up``); starting and stopping that
pair in the right threads is its own job, apart from the timing.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from mesh.core import settings
from mesh.edges import etcd_process
from meshserve import node

_T = TypeVar("_T")


class MeshThread:
    """An etcd and a :class:`meshserve.node.Node` serving from an event loop
    in a background thread, so that the synchronous clients of the main
    thread never block it (as the integration tests run a node).

    etcd is started from the main thread and the node (which starts MLServer)
    from the loop's thread: each child dies with the thread that started it
    (``mesh.edges.processes``), and both threads outlive what they started."""

    def __init__(
        self, data_dir: pathlib.Path, models_root: pathlib.Path, runtimes_dir: pathlib.Path
    ) -> None:
        self.etcd = etcd_process.EtcdServer(
            data_dir / "etcd", log_path=data_dir / "logs" / "etcd.log"
        )
        self.config = settings.Settings(
            kv=settings.KVSettings(endpoints=(self.etcd.endpoint,)),
            service=settings.ServiceSettings(
                host="127.0.0.1", grpc_port=0, rest_port=-1, metrics_port=-1, probe_port=-1
            ),
            node=settings.NodeSettings(
                instance_id="bench-node", data_dir=data_dir, models_root=models_root
            ),
            runtime=settings.RuntimeSettings(venv=runtimes_dir),
        )
        self.node = node.Node(self.config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 120) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        """Start etcd, then the node (on failure, stop what had started)."""
        self.etcd.start()
        self._thread.start()
        try:
            self.run(self.node.start())
        except BaseException:
            self._end_loop()
            self.etcd.stop()
            raise

    def stop(self) -> None:
        try:
            self.run(self.node.stop(), timeout=60)
        finally:
            self._end_loop()
            self.etcd.stop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def endpoint(self) -> str:
        """The mesh's gRPC endpoint (``host:port``)."""
        return f"127.0.0.1:{self.node.port}"

    @property
    def runtime_endpoint(self) -> str:
        """MLServer's own V2 gRPC endpoint."""
        return self.node.runtime.grpc_target

    @property
    def model_dir(self) -> pathlib.Path:
        """MLServer's model repository."""
        return self.config.node.model_dir
