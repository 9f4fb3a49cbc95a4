"""What every runtime adapter does the same way with a runtime it speaks V2 to.

MLServer and Triton differ in their model folders and in how they size a
model, but not in how they are reached: over the V2 protocol's gRPC service,
from whichever event loop calls (a grpc.aio channel works only in the loop
that made it; tests drive one adapter from several loops), with loads one at
a time, a wait after start until ``ServerReady`` says true, and the model
repository calls (``RepositoryModelLoad`` / ``RepositoryModelUnload``) whose
failures mean either "the runtime is gone" or "it refused the model". Nor do
they differ in how a pulled folder is listed and sized. :class:`V2Connection`,
:class:`V2RuntimeAdapter` (the base of both adapters) and the folder helpers
here do that once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
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


# --------------------------------------------------------------------------
# A pulled model folder: its files and their size

LISTED_FILES_IN_ERRORS = 10
"""How many file names an error message lists (:func:`some_names`)."""


def is_runtime_file(relative: str, config_file: str) -> bool:
    """Whether a path in a model folder is the runtime's or a marker, not the
    model: the runtime's ``config_file`` at the top (``model-settings.json``,
    ``config.pbtxt``), and hidden files or folders."""
    return relative == config_file or any(p.startswith(".") for p in relative.split("/"))


def some_names(names: Sequence[str]) -> str:
    """The first :data:`LISTED_FILES_IN_ERRORS` of ``names``, joined, and how
    many more there are: file lists in error messages stay short."""
    shown = ", ".join(names[:LISTED_FILES_IN_ERRORS])
    more = len(names) - LISTED_FILES_IN_ERRORS
    return shown + (f" and {more} more" if more > 0 else "")


def list_folder(folder: pathlib.Path) -> list[str]:
    """Paths (relative, ``/``-separated) of the files under ``folder``."""
    found: list[str] = []
    for dirpath, _dirs, names in os.walk(folder):
        base = pathlib.Path(dirpath).relative_to(folder)
        found.extend((base / n).as_posix() for n in names if pathlib.Path(dirpath, n).is_file())
    return sorted(found)


def folder_bytes(folder: pathlib.Path, files: Iterable[str], config_file: str) -> int:
    """Bytes on disk of the model's files (not the runtime's ``config_file``
    or markers: :func:`is_runtime_file`)."""
    total = 0
    for f in files:
        if not is_runtime_file(f, config_file):
            with contextlib.suppress(OSError):
                total += (folder / f).stat().st_size
    return total


def write_atomically(path: pathlib.Path, text: str) -> None:
    """Write ``path`` through a hidden temporary file beside it: the runtime
    may be reading its config files for another load meanwhile."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --------------------------------------------------------------------------
# The connection and the adapters' shared half


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


class V2RuntimeAdapter:
    """The half of a :class:`mesh.core.interfaces.RuntimeAdapter` that is the
    same for every runtime spoken to over V2 gRPC: its address, the process
    we start (or the one at a configured endpoint) and its readiness, and the
    repository calls that load and unload a model, each failure told apart as
    the runtime gone (:class:`mesh.core.errors.RuntimeUnavailable`) or the
    model refused (:class:`mesh.core.errors.ModelLoadFailed`). A subclass
    starts its runtime, lays out its model folders and sizes its models."""

    label = "V2 runtime"
    """The runtime's name in messages (``MLServer``, ``Triton``)."""

    def __init__(
        self,
        endpoint: str,
        host: str,
        grpc_port: int,
        log_path: pathlib.Path,
        start_timeout_seconds: float,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """``endpoint``: ``host:port`` of a runtime already running, else
        empty; ``host`` and ``grpc_port`` (0 until :meth:`_launch` picks
        one): where ours listens; ``log_path``: where its output goes."""
        self._endpoint = endpoint
        self._host = host
        self._grpc_port = grpc_port
        self._log_path = log_path
        self._start_timeout_seconds = start_timeout_seconds
        self._child: processes.ChildProcess | None = None
        self._v2 = V2Connection(lambda: self.grpc_target, channel_options)

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the V2 gRPC endpoint (raises
        :class:`mesh.core.errors.RuntimeUnavailable` before :meth:`start` picked a
        port)."""
        return target(self._endpoint, self._host, self._grpc_port, self.label)

    @property
    def pid(self) -> int | None:
        """Process id of the runtime we started, if it runs."""
        return self._child.pid if self._child and self._child.running() else None

    @property
    def log_path(self) -> pathlib.Path:
        """Where the output of the runtime we start goes."""
        return self._log_path

    def _started(self) -> bool:
        """Whether the runtime we started runs."""
        return self._child is not None and self._child.running()

    async def ready(self) -> bool:
        return await self._v2.ready(self._child)

    async def _wait_ready(self) -> None:
        """Wait for ServerReady of the runtime (at the endpoint) for up to the
        start timeout (:meth:`V2Connection.wait_ready`)."""
        await self._v2.wait_ready(
            self.label,
            self._child,
            self._log_path,
            self._start_timeout_seconds,
            time.monotonic() + self._start_timeout_seconds,
        )

    async def _launch(self, child: processes.ChildProcess) -> float:
        """Start ``child`` as our runtime and wait until it is ready (stopping
        it if it is not: :meth:`V2Connection.launch`); the seconds it took."""
        self._child = child
        return await self._v2.launch(
            self.label, child, self._log_path, self._start_timeout_seconds, self.stop
        )

    async def stop(self) -> None:
        await self._stop_child()

    async def _stop_child(self, timeout: float = 10.0) -> None:
        """Close the channel and stop the process we started, if any
        (SIGTERM, SIGKILL after ``timeout``)."""
        child, self._child = self._child, None
        await self._v2.close()
        if child is not None:
            await asyncio.to_thread(child.stop, timeout)

    async def _repository_load(
        self, model_id: str, model_path: pathlib.Path, timeout_seconds: float
    ) -> None:
        """``RepositoryModelLoad`` of ``model_id``. The runtime unreachable
        or exited: :class:`mesh.core.errors.RuntimeUnavailable`; no answer
        within ``timeout_seconds``, or a refusal (its reason completed by
        :meth:`_refusal_reason`): :class:`mesh.core.errors.ModelLoadFailed`."""
        try:
            await self._v2.stub().RepositoryModelLoad(
                service_pb2.RepositoryModelLoadRequest(model_name=model_id),
                timeout=timeout_seconds,
            )
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or (
                self._child is not None and not self._child.running()
            ):
                raise self._unavailable(f"could not load {model_id!r}", e) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                await self._load_timed_out(model_id)
                raise errors.ModelLoadFailed(
                    model_id,
                    f"{self.label} did not finish loading within {timeout_seconds:g} s",
                ) from None
            reason = await self._refusal_reason(model_id, model_path, e.details() or code.name)
            raise errors.ModelLoadFailed(
                model_id, f"{self.label}: {reason} ({code.name})"
            ) from None

    async def _load_timed_out(self, model_id: str) -> None:
        """What to do when a load outlived its timeout (nothing here)."""

    async def _refusal_reason(self, model_id: str, model_path: pathlib.Path, details: str) -> str:
        """The reason a refused load failed: here the runtime's own answer."""
        return details

    async def _repository_unload(self, model_id: str, timeout_seconds: float) -> bool:
        """``RepositoryModelUnload`` of ``model_id``: ``False`` when the
        runtime does not know the model (``NOT_FOUND``: gone already), raises
        :class:`mesh.core.errors.RuntimeUnavailable` for any other failure."""
        try:
            await self._v2.stub().RepositoryModelUnload(
                service_pb2.RepositoryModelUnloadRequest(model_name=model_id),
                timeout=timeout_seconds,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise self._unavailable(f"could not unload {model_id!r}", e) from None
        return True

    def _unavailable(self, what: str, e: Any) -> errors.RuntimeUnavailable:
        """The runtime failed a call: say where, and how it ended if it exited."""
        message = f"{self.label} at {self.grpc_target} {what}: {e.code().name}: {e.details()}"
        if self._child is not None and not self._child.running():
            message += (
                f"; it exited with {self._child.returncode()}, its log ends:\n"
                f"{self._child.log_tail()}"
            )
        return errors.RuntimeUnavailable(message)
