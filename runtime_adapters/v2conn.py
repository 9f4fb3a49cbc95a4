"""What every adapter does the same way with its runtime's V2 gRPC port.

A runtime adapter talks to its runtime (MLServer, Triton) over the V2
protocol's gRPC service, from whichever event loop calls it (a grpc.aio
channel works only in the loop that made it; tests drive one adapter from
several loops), serialises its loads, and waits after starting the runtime
until ``ServerReady`` says true. :class:`V2Connection` and
:func:`wait_ready` do that once for all adapters.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from mesh.core import errors
from mesh.edges import processes


def target(endpoint: str, host: str, port: int, label: str) -> str:
    """``host:port`` of a runtime's V2 gRPC endpoint: the configured endpoint
    of a runtime already running, else the port we started ours on (a
    wildcard listen address is reached on 127.0.0.1). Raises
    :class:`mesh.core.errors.RuntimeUnavailable` before a port was picked."""
    if endpoint:
        return endpoint
    if not port:
        raise errors.RuntimeUnavailable(f"{label} has not been started: no gRPC port yet")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port}"


class V2Connection:
    """A V2 stub and a lock, remade for the running event loop when it changes."""

    def __init__(self, target: Callable[[], str], options: Sequence[tuple[str, Any]] = ()) -> None:
        """``target`` gives ``host:port`` when a channel is made (an adapter
        knows its port only once it started the runtime)."""
        self._target = target
        self._options = list(options)
        self._channel: Any = None
        self._stub: Any = None
        self._channel_loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @property
    def target(self) -> str:
        return self._target()

    def stub(self) -> Any:
        """``GRPCInferenceServiceStub`` on a channel of the running loop."""
        loop = asyncio.get_running_loop()
        if self._stub is None or self._channel_loop is not loop:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
            self._channel_loop = loop
        return self._stub

    def lock(self) -> asyncio.Lock:
        """The adapter's lock (loads one at a time), of the running loop."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    async def close(self) -> None:
        channel, loop = self._channel, self._channel_loop
        self._channel = self._stub = self._channel_loop = None
        if channel is not None and loop is asyncio.get_running_loop():
            await channel.close()

    async def ready(self, child: processes.ChildProcess | None) -> bool:
        """Whether the runtime (and the process we started, if any) is ready."""
        if child is not None and not child.running():
            return False
        try:
            response = await self.stub().ServerReady(service_pb2.ServerReadyRequest(), timeout=2.0)
        except (grpc.aio.AioRpcError, errors.RuntimeUnavailable):
            return False
        return bool(response.ready)

    async def launch(
        self,
        label: str,
        child: processes.ChildProcess,
        log_path: pathlib.Path,
        timeout_seconds: float,
        stop: Callable[[], Awaitable[None]],
    ) -> float:
        """Start ``child`` and wait until it answers ``ServerReady``; on any
        failure, ``stop()`` and raise (:meth:`wait_ready`). The seconds it took."""
        started = time.monotonic()
        try:
            child.start()
        except OSError as e:
            raise errors.RuntimeUnavailable(f"cannot start {label} ({child.argv[0]}): {e}") from e
        try:
            await self.wait_ready(
                label, child, log_path, timeout_seconds, started + timeout_seconds
            )
        except BaseException:
            await stop()
            raise
        return time.monotonic() - started

    async def wait_ready(
        self,
        label: str,
        child: processes.ChildProcess | None,
        log_path: pathlib.Path,
        timeout_seconds: float,
        deadline: float,
    ) -> None:
        """Poll ``ServerReady`` until true; raise
        :class:`mesh.core.errors.RuntimeUnavailable` with the end of the runtime's
        log if its process exits first or ``deadline`` (monotonic) passes."""
        stub = self.stub()
        last = "no answer yet"
        while True:
            if child is not None and not child.running():
                raise errors.RuntimeUnavailable(
                    f"{label} exited with {child.returncode()} before it was ready; "
                    f"its log ({log_path}) ends:\n{child.log_tail()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                tail = f"; its log ({log_path}) ends:\n{child.log_tail()}" if child else ""
                raise errors.RuntimeUnavailable(
                    f"{label} at {self.target} not ready within "
                    f"{timeout_seconds:g} s ({last}){tail}"
                )
            try:
                response = await stub.ServerReady(
                    service_pb2.ServerReadyRequest(), timeout=min(1.0, left)
                )
                if response.ready:
                    return
                last = "ServerReady said false"
            except grpc.aio.AioRpcError as e:
                last = f"{e.code().name}: {e.details()}"
            await asyncio.sleep(0.05)
