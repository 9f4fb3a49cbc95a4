"""Triton Inference Server as a mesh runtime: start it, load models, unload
them until they are gone, and size them by measurement.

The adapter drives Triton's V2 repository API over gRPC
(``RepositoryModelLoad`` / ``RepositoryModelUnload``, with
``--model-control-mode=explicit``) through
:class:`runtime_adapters.v2_runtime.V2RuntimeAdapter`. Unload is asynchronous
in Triton: the call returns at once, the model goes on unloading for about a
second (its Python stub process exits last), and ``ModelReady`` already says
false meanwhile; :meth:`TritonAdapter.unload` waits until the repository
index no longer shows it loading, ready or unloading, so the memory the cache
counts free is free. What a model costs is the growth of the RSS of Triton's
whole process tree across the load (the Python backend runs each model
instance in a stub process of its own, ~40 MB each), or of its GPU memory
(NVML) when the runtime counts GPU memory (:mod:`runtime_adapters.memory`).
Triton answers a model it does not hold with ``NOT_FOUND`` ("Request for
unknown model: 'x' is not found" or "... has no available versions"); the
router reads both that and an ``INTERNAL`` "unknown model" as a model the
runtime lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import time
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from mesh.core import errors, eviction
from mesh.edges import ports, processes
from runtime_adapters import memory, v2_runtime
from runtime_adapters.triton import formats, launch, layout, pbtxt

log = logging.getLogger(__name__)

_CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 64 * 1024 * 1024),)
"""The repository index lists every model Triton has seen: allow a long answer."""

WORK_DIR_NAME = ".triton"
"""Folder under ``model_dir`` for the runtime's own files (log, working
directory). Hidden, and never asked for: explicit model control loads only
the folders we name."""

MEMORY_POOLS = ("auto", "host", "gpu")
"""Values of :attr:`TritonConfig.memory_pool`."""

UNLOAD_POLL_SECONDS = 0.02
"""How often :meth:`TritonAdapter.unload` asks whether the model is gone."""


def reported_bytes(statistics: Any, gpu: bool) -> int | None:
    """The memory Triton itself reports for a model (``ModelStatistics``
    ``memory_usage``: backends that report it, like TensorRT's; the Python
    backend does not), in the pool the adapter counts; ``None`` without a
    report."""
    total: int | None = None
    for model in statistics.model_stats:
        for usage in model.memory_usage:
            if (usage.type == "GPU") == gpu:
                total = (total or 0) + int(usage.byte_size)
    return total


def model_size(
    predicted: int, measured: int | None, reported: int | None, earlier: int | None, minimum: int
) -> int:
    """The size to account for a model: :func:`mesh.core.eviction.corrected_size`
    of the prediction and the larger of what we measured and what Triton
    reported; or, for a model already loaded here (``earlier``), the size its
    load found: loading it again is a no-op for Triton, and what the memory
    did meanwhile is noise, not the model."""
    if earlier is not None:
        return earlier
    observed = max((m for m in (measured, reported) if m is not None), default=None)
    return eviction.corrected_size(predicted, observed, minimum)


@dataclasses.dataclass(frozen=True)
class TritonConfig:
    """How to run (or reach) one Triton."""

    model_dir: pathlib.Path
    """Triton's model repository: each model is a folder
    ``<model_dir>/<model_id>`` holding its files when :meth:`TritonAdapter.load`
    is called, laid out for Triton there."""
    venv: pathlib.Path = pathlib.Path(".runtimes/triton")
    """Triton's virtual environment as ``make runtimes`` builds it: the
    ``nvidia-pytriton`` wheel, with ``tritonserver/`` copied out of it."""
    endpoint: str = ""
    """``host:port`` of the gRPC endpoint of a Triton already running
    (NVIDIA's image, beside the node in its pod), which must serve
    ``model_dir`` as its repository with ``--model-control-mode=explicit``;
    empty: start our own process."""
    host: str = "127.0.0.1"
    """Address our own Triton listens on."""
    grpc_port: int = 0
    """V2 gRPC port of our own Triton; 0 picks a free one at start."""
    http_port: int | None = None
    """Triton's HTTP/REST port (the mesh speaks gRPC only); ``None``: no HTTP
    server, 0: a free port."""
    log_path: pathlib.Path | None = None
    """Where our Triton's output goes; default ``<model_dir>/.triton/triton.log``."""
    model_types: tuple[str, ...] = formats.WHEEL_MODEL_TYPES
    """The model types this Triton serves (keys of
    :data:`runtime_adapters.triton.formats.FORMATS`). The wheel's Triton has
    the Python backend only; NVIDIA's image serves ``python``, ``onnx``,
    ``pytorch``, ``tensorflow`` and ``tensorrt``."""
    memory_pool: str = "auto"
    """Which memory a model's size counts: ``host`` (RSS growth of the
    runtime's process tree), ``gpu`` (GPU memory growth, NVML), or ``auto``:
    ``gpu`` when NVML sees a GPU at start and this Triton serves a type
    other than ``python`` (whose generated configs run on the CPU), else
    ``host``. It must be the memory the node's capacity counts
    (:attr:`TritonAdapter.counts_gpu_memory` says which it settled on)."""
    start_timeout_seconds: float = 60.0
    """Longest wait for ServerReady after starting (or connecting)."""
    load_timeout_seconds: float = 120.0
    """Longest a single ``RepositoryModelLoad`` may take; then the load counts
    as failed (and the model is unloaded)."""
    unload_timeout_seconds: float = 60.0
    """Longest wait for an unloaded model to be gone."""
    stop_timeout_seconds: float = 15.0
    """Triton's ``--exit-timeout-secs``; it is killed 5 s after that."""
    size_multiplier: float = 1.25
    """Predicted memory of a model: its bytes on disk * this (plus, counting
    host memory, its format's per-instance overhead)."""
    min_model_size_bytes: int = 1024 * 1024
    """Floor of every reported model size."""
    extra_args: tuple[str, ...] = ()
    """More ``tritonserver`` options for our own Triton (e.g.
    ``--backend-config=python,shm-default-byte-size=...``)."""

    def __post_init__(self) -> None:
        unknown = [t for t in self.model_types if t not in formats.FORMATS]
        if unknown:
            raise errors.ConfigError(
                f"triton model types {unknown} are unknown (known: {', '.join(formats.FORMATS)})"
            )
        if self.memory_pool not in MEMORY_POOLS:
            raise errors.ConfigError(
                f"triton memory_pool {self.memory_pool!r} is not one of {', '.join(MEMORY_POOLS)}"
            )


class TritonAdapter(v2_runtime.V2RuntimeAdapter):
    """:class:`mesh.core.interfaces.RuntimeAdapter` for one Triton process.

    Loads and unloads are serialised: one at a time is what makes the memory
    growth across a load that load's own (an unload finishing during a load
    would hide the load's growth). Triton could load several models at once.
    """

    name = "triton"
    label = "Triton"

    def __init__(self, config: TritonConfig) -> None:
        self.config = config
        super().__init__(
            config.endpoint,
            config.host,
            config.grpc_port,
            config.log_path or config.model_dir / WORK_DIR_NAME / "triton.log",
            config.start_timeout_seconds,
            _CHANNEL_OPTIONS,
        )
        self._endpoint_pid: int | None = None
        self._gpu = config.memory_pool == "gpu"
        self._sizes: dict[str, int] = {}

    @property
    def pid(self) -> int | None:
        """Process id of the Triton whose memory we measure: the one we
        started, or the visible process listening on the endpoint's port."""
        if self._child is not None:
            return self._child.pid if self._child.running() else None
        return self._endpoint_pid

    @property
    def counts_gpu_memory(self) -> bool:
        """Whether model sizes count GPU memory (else host memory); settled
        by :meth:`start` for ``memory_pool="auto"``."""
        return self._gpu

    def supported_model_types(self) -> tuple[str, ...]:
        return tuple(self.config.model_types)

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        if cfg.memory_pool == "auto":
            gpu_types = [t for t in cfg.model_types if t != "python"]
            self._gpu = bool(gpu_types) and await asyncio.to_thread(memory.has_gpu)
        if cfg.endpoint:
            await self._wait_ready()
            self._endpoint_pid = await asyncio.to_thread(launch.local_listener, cfg.endpoint)
            log.info(
                "Triton at %s ready; %s",
                cfg.endpoint,
                f"measuring its process {self._endpoint_pid}"
                if self._endpoint_pid
                else "its process is not visible here: sizes are predicted, not measured",
            )
            return
        if self._started():
            return
        install = launch.find_install(cfg.venv)
        self._grpc_port = cfg.grpc_port or ports.free_port(cfg.host)
        http_port = cfg.http_port
        if http_port == 0:
            http_port = ports.free_port(cfg.host)
        work_dir = cfg.model_dir / WORK_DIR_NAME
        work_dir.mkdir(parents=True, exist_ok=True)
        argv = launch.server_args(
            install,
            cfg.model_dir.absolute(),
            cfg.host,
            self._grpc_port,
            http_port,
            cfg.stop_timeout_seconds,
            await asyncio.to_thread(launch.gpu_count),
            cfg.extra_args,
        )
        env = launch.server_env(os.environ, install)
        child = processes.ChildProcess("tritonserver", argv, self.log_path, env=env, cwd=work_dir)
        self._sizes.clear()
        took = await self._launch(child)
        log.info(
            "Triton pid %s ready on %s in %.2f s (sizes count %s memory)",
            child.pid,
            self.grpc_target,
            took,
            "GPU" if self._gpu else "host",
        )

    async def stop(self) -> None:
        """SIGTERM to Triton's process group (its stubs exit with it and
        remove their shared-memory regions), SIGKILL what is left after
        ``stop_timeout_seconds`` + 5 s."""
        self._sizes.clear()
        await self._stop_child(self.config.stop_timeout_seconds + 5)

    # -- models ------------------------------------------------------------

    async def load(self, model_id: str, model_type: str, model_path: pathlib.Path) -> int:
        """Lay the folder out, write its config.pbtxt and load the model.

        Returns the model's size in bytes (:func:`model_size`): the
        prediction (bytes on disk * ``size_multiplier``, plus a Python stub's
        ~40 MB when counting host memory), corrected upward by the measured
        growth of the runtime's memory across the load (RSS of its process
        tree, or GPU memory) and by Triton's own report where its backend
        gives one.
        """
        fmt = formats.format_for(model_id, model_type, self.config.model_types)
        disk = await asyncio.to_thread(layout.prepare_model_folder, model_id, fmt, model_path)
        gpu = self._gpu
        predicted = eviction.predicted_size(
            disk, self.config.size_multiplier, self.config.min_model_size_bytes
        ) + (0 if gpu else fmt.instance_overhead_bytes)
        async with self._v2.lock():
            pid = self.pid
            before = await asyncio.to_thread(memory.measure, pid, gpu)
            started = time.monotonic()
            await self._repository_load(model_id, model_path, self.config.load_timeout_seconds)
            elapsed = time.monotonic() - started
            after = await asyncio.to_thread(memory.measure, pid, gpu)
            reported = await self._reported_bytes(model_id, gpu)
            host = memory.host_growth(before, after)
            on_gpu = memory.gpu_growth(before, after)
            size = model_size(
                predicted,
                on_gpu if gpu else host,
                reported,
                self._sizes.get(model_id),
                self.config.min_model_size_bytes,
            )
            self._sizes[model_id] = size
        log.info(
            "loaded %s (%s) in %.3f s: %d bytes on disk, predicted %d, host growth %s, "
            "GPU growth %s, Triton reported %s, reported %d (%s memory)",
            model_id,
            model_type,
            elapsed,
            disk,
            predicted,
            host,
            on_gpu,
            reported,
            size,
            "GPU" if gpu else "host",
        )
        return size

    async def unload(self, model_id: str) -> None:
        """Unload the model and wait until Triton no longer holds it (its
        stub process gone). A model Triton never had is gone already."""
        async with self._v2.lock():
            started = time.monotonic()
            timeout = self.config.unload_timeout_seconds
            if not await self._repository_unload(model_id, timeout):
                self._sizes.pop(model_id, None)
                return
            await self._wait_gone(model_id, started + timeout)
            self._sizes.pop(model_id, None)
            log.info("unloaded %s in %.3f s", model_id, time.monotonic() - started)

    async def _wait_gone(self, model_id: str, deadline: float) -> None:
        stub = self._v2.stub()
        while True:
            try:
                index = await stub.RepositoryIndex(
                    service_pb2.RepositoryIndexRequest(ready=False), timeout=10.0
                )
            except grpc.aio.AioRpcError as e:
                raise self._unavailable(f"could not tell whether {model_id!r} is gone", e) from None
            states = {m.state for m in index.models if m.name == model_id}
            if not states & {"READY", "LOADING", "UNLOADING"}:
                return
            if time.monotonic() >= deadline:
                raise errors.RuntimeUnavailable(
                    f"Triton at {self.grpc_target} did not finish unloading {model_id!r} within "
                    f"{self.config.unload_timeout_seconds:g} s (state: {', '.join(sorted(states))})"
                )
            await asyncio.sleep(UNLOAD_POLL_SECONDS)

    async def _load_timed_out(self, model_id: str) -> None:
        """Unload a model whose load timed out: Triton goes on loading it."""
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._v2.stub().RepositoryModelUnload(
                service_pb2.RepositoryModelUnloadRequest(model_name=model_id), timeout=5.0
            )

    async def _refusal_reason(self, model_id: str, model_path: pathlib.Path, details: str) -> str:
        """Triton's answer, completed by its log's errors about the model and,
        for a config it could not read, where the config is wrong."""
        reason = details.strip().rstrip(";").strip()
        if self._child is not None:
            lines = self._child.log_tail(200).splitlines()
            reason += "".join(f"; {m}" for m in launch.triton_log_errors(model_id, lines))
        if "text proto" in reason:
            problem = await asyncio.to_thread(_config_problem_of, model_path)
            reason += f"; {problem}" if problem else ""
        return reason

    async def _reported_bytes(self, model_id: str, gpu: bool) -> int | None:
        try:
            stats = await self._v2.stub().ModelStatistics(
                service_pb2.ModelStatisticsRequest(name=model_id), timeout=5.0
            )
        except grpc.aio.AioRpcError as e:
            log.debug("no statistics for %s: %s", model_id, e.details())
            return None
        return reported_bytes(stats, gpu)


def _config_problem_of(model_path: pathlib.Path) -> str | None:
    try:
        return pbtxt.config_problem((model_path / pbtxt.CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot read {pbtxt.CONFIG_FILE}: {e}"
