"""Memory, measured: what a runtime process tree uses, and what a node may hold.

KServe ModelMesh guesses a model's size as its disk size × 1.25 and cannot see
GPU memory, so its pods are OOM-killed or sit half empty. meshserve measures
instead, and every runtime adapter measures the same way, with this module:

- **Host memory**: the resident set (RSS) of the runtime's whole process
  tree, read with ``psutil``. Triton's Python backend runs each model
  instance in a stub process of its own, MLServer may run workers: the tree,
  not the main process, is what a model costs. RSS counts shared library
  pages once per process, so it errs on the side of too much (a full node),
  never too little (an OOM kill).
- **GPU memory**: what NVML (``pynvml`` from ``nvidia-ml-py``) says the
  tree's processes hold; where NVML lists none of them (a container whose PID
  namespace hides the host pids NVML reports) the device-wide use. Without
  NVML, a driver or a GPU every GPU figure is ``None``: "no GPU", never an error.
- **Capacity**: the container's memory limit (cgroup v2 ``memory.max``, v1
  ``memory.limit_in_bytes``), else the machine's memory, or a configured size;
  GPU capacity from NVML; either minus a buffer.

The decisions (parsing a cgroup file, which GPU figure to trust, growth,
capacity after a buffer) are pure functions over frozen values; reading
``/proc``, ``/sys`` and NVML stays in the few functions that say so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import pathlib
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psutil
import pynvml  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")
"""Where the container's cgroup files are mounted."""

UNLIMITED_BYTES = 1 << 62
"""A cgroup v1 limit at or above this means "no limit" (the kernel writes
``PAGE_COUNTER_MAX`` × page size, 9223372036854771712 on x86-64)."""


# --------------------------------------------------------------------------
# Values


@dataclasses.dataclass(frozen=True)
class GpuDevice:
    """One GPU as NVML reports it."""

    index: int
    total_bytes: int
    used_bytes: int


@dataclasses.dataclass(frozen=True)
class GpuProcess:
    """One process holding memory on a GPU (NVML's compute and graphics lists)."""

    pid: int
    device: int
    used_bytes: int | None
    """``None`` where NVML cannot tell (it says "not available")."""


@dataclasses.dataclass(frozen=True)
class GpuSnapshot:
    """Every GPU NVML sees, and the processes on them, at one moment."""

    devices: tuple[GpuDevice, ...]
    processes: tuple[GpuProcess, ...] = ()


@dataclasses.dataclass(frozen=True)
class Usage:
    """What a runtime's process tree held at one moment."""

    host_bytes: int | None
    """RSS of the whole tree; ``None``: the process is gone or not visible."""
    gpu_process_bytes: int | None = None
    """GPU memory NVML lists for the tree's processes; ``None``: none of them
    is listed (no GPU use yet, or a PID namespace hides them), or no GPU."""
    gpu_device_bytes: int | None = None
    """GPU memory used on all devices, by anyone; ``None``: no GPU."""


# --------------------------------------------------------------------------
# Pure parts


def tree_gpu_bytes(snapshot: GpuSnapshot | None, pids: Iterable[int]) -> int | None:
    """GPU memory the processes ``pids`` hold in ``snapshot``; ``None`` when
    the snapshot lists none of them (or there is no GPU)."""
    if snapshot is None:
        return None
    wanted = set(pids)
    held = [p for p in snapshot.processes if p.pid in wanted]
    if not held:
        return None
    return sum(p.used_bytes or 0 for p in held)


def device_used_bytes(snapshot: GpuSnapshot | None) -> int | None:
    """GPU memory used on every device of ``snapshot``; ``None``: no GPU."""
    if snapshot is None or not snapshot.devices:
        return None
    return sum(d.used_bytes for d in snapshot.devices)


def device_total_bytes(snapshot: GpuSnapshot | None) -> int | None:
    """GPU memory of every device of ``snapshot``; ``None``: no GPU."""
    if snapshot is None or not snapshot.devices:
        return None
    return sum(d.total_bytes for d in snapshot.devices)


def usage_of(host_bytes: int | None, snapshot: GpuSnapshot | None, pids: Iterable[int]) -> Usage:
    """A :class:`Usage` from the tree's RSS and a GPU snapshot."""
    return Usage(
        host_bytes=host_bytes,
        gpu_process_bytes=tree_gpu_bytes(snapshot, pids),
        gpu_device_bytes=device_used_bytes(snapshot),
    )


def host_growth(before: Usage, after: Usage) -> int | None:
    """How much the tree's RSS grew (may be negative); ``None`` when either
    side could not be read."""
    if before.host_bytes is None or after.host_bytes is None:
        return None
    return after.host_bytes - before.host_bytes


def gpu_growth(before: Usage, after: Usage) -> int | None:
    """How much GPU memory the runtime took between two readings.

    The tree's own figure when NVML lists the tree afterwards (a first GPU
    model also pays for the CUDA context: the tree was not listed before, and
    counts from zero). Otherwise the device-wide growth: NVML reports host
    pids, which a container's PID namespace hides, and then the device is all
    we can see (other tenants of a shared GPU count too, which only errs
    towards too much). ``None`` without a GPU.
    """
    if after.gpu_process_bytes is not None:
        return after.gpu_process_bytes - (before.gpu_process_bytes or 0)
    if before.gpu_device_bytes is None or after.gpu_device_bytes is None:
        return None
    return after.gpu_device_bytes - before.gpu_device_bytes


def parse_cgroup_limit(text: str) -> int | None:
    """A cgroup memory limit file's value in bytes; ``None`` for no limit
    (``max`` in v2, a huge number in v1) or text that is not a limit."""
    value = text.strip()
    if value in ("", "max"):
        return None
    try:
        limit = int(value)
    except ValueError:
        return None
    if limit <= 0 or limit >= UNLIMITED_BYTES:
        return None
    return limit


def capacity_after_buffer(total_bytes: int, buffer_fraction: float, reserved_bytes: int = 0) -> int:
    """Bytes models may take out of ``total_bytes``: minus a fraction kept as
    a buffer (allocator slack, request tensors, measurement error) and minus
    ``reserved_bytes`` (what the node and the idle runtime themselves hold);
    never below zero."""
    if not 0.0 <= buffer_fraction < 1.0:
        raise ValueError(f"buffer_fraction must be in [0, 1), not {buffer_fraction}")
    buffer = math.ceil(total_bytes * buffer_fraction)
    return max(0, total_bytes - buffer - max(0, reserved_bytes))


def host_total_bytes(configured: int | None, cgroup_limit: int | None, physical: int) -> int:
    """The host memory a node's models share: a configured size wins, then
    the container's limit (never above the machine's memory), then the
    machine's memory."""
    if configured is not None and configured > 0:
        return configured
    if cgroup_limit is not None:
        return min(cgroup_limit, physical)
    return physical


# --------------------------------------------------------------------------
# Processes (psutil)


def process_tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants; empty if it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int | None:
    """RSS of a process and all its descendants; ``None`` if it is gone."""
    return rss_sum(process_tree(pid))


def rss_sum(tree: list[psutil.Process]) -> int | None:
    """RSS of the processes of a :func:`process_tree` (finding the tree scans
    all of ``/proc``, 1-3 ms; reading each RSS again is ~30 µs); ``None`` if
    its root is gone."""
    if not tree:
        return None
    total = 0
    for index, proc in enumerate(tree):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            if index == 0:
                return None  # the root went away while we counted
        except psutil.AccessDenied:
            continue
    return total


def measure(pid: int | None, gpu: bool = True) -> Usage:
    """The tree's RSS and, with ``gpu``, its GPU memory (NVML), now."""
    if pid is None:
        return Usage(host_bytes=None)
    pids = [p.pid for p in process_tree(pid)]
    host = tree_rss(pid)
    snapshot = gpu_snapshot() if gpu else None
    return usage_of(host, snapshot, pids)


def process_listening_on(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` on this machine (a
    runtime started by someone else: in a Kubernetes pod with a shared
    process namespace, the runtime container's); ``None`` if none is visible."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for c in connections:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return int(c.pid)
    return None


# --------------------------------------------------------------------------
# GPUs (NVML)


def _init_nvml() -> Any:
    """``pynvml`` once ``nvmlInit`` succeeded, else ``None`` (no driver, no
    GPU: NVML raises, and we say so once in the log)."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        log.info("no GPU memory figures: NVML is not available (%s)", e)
        return None
    return pynvml


class Nvml:
    """NVML, initialised on first use, once per process; every failure means
    "no GPU". ``loader`` returns the NVML module (``pynvml``) or ``None``:
    tests pass a fake one to exercise the GPU paths without a GPU."""

    def __init__(self, loader: Callable[[], Any] = _init_nvml) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._module: Any = None
        self._tried = False

    def module(self) -> Any:
        """The initialised NVML module, or ``None``."""
        with self._lock:
            if not self._tried:
                self._tried = True
                self._module = self._loader()
            return self._module


NVML = Nvml()
"""The process's NVML; replace it (``monkeypatch.setattr``) to fake GPUs."""


def gpu_snapshot(devices: Sequence[int] | None = None) -> GpuSnapshot | None:
    """What NVML says now about the GPUs (``devices``: their indexes; all by
    default) and the processes on them; ``None`` without NVML or GPUs."""
    nvml = NVML.module()
    if nvml is None:
        return None
    try:
        count = nvml.nvmlDeviceGetCount()
        indexes = range(count) if devices is None else [i for i in devices if 0 <= i < count]
        found: list[GpuDevice] = []
        procs: list[GpuProcess] = []
        for index in indexes:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            found.append(GpuDevice(index, int(info.total), int(info.used)))
            for lister in (
                nvml.nvmlDeviceGetComputeRunningProcesses,
                nvml.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                with contextlib.suppress(nvml.NVMLError):
                    for p in lister(handle):
                        used = p.usedGpuMemory
                        procs.append(
                            GpuProcess(int(p.pid), index, None if used is None else int(used))
                        )
    except nvml.NVMLError as e:
        log.warning("NVML failed, reporting no GPU: %s", e)
        return None
    if not found:
        return None
    return GpuSnapshot(tuple(found), tuple(_unique(procs)))


def _unique(procs: Iterable[GpuProcess]) -> list[GpuProcess]:
    # A process can be on both lists of a device; count it once per device.
    seen: dict[tuple[int, int], GpuProcess] = {}
    for p in procs:
        seen.setdefault((p.pid, p.device), p)
    return list(seen.values())


def has_gpu() -> bool:
    """Whether NVML sees at least one GPU here."""
    return gpu_snapshot() is not None


# --------------------------------------------------------------------------
# Capacity


def cgroup_memory_limit(root: pathlib.Path = CGROUP_ROOT) -> int | None:
    """The container's memory limit in bytes: cgroup v2 ``memory.max``, else
    v1 ``memory/memory.limit_in_bytes``; ``None`` for no limit or no cgroup."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text()
        except OSError:
            continue
        return parse_cgroup_limit(text)
    return None


def host_capacity_bytes(
    configured: int | None = None,
    buffer_fraction: float = 0.1,
    reserved_bytes: int = 0,
    cgroup_root: pathlib.Path = CGROUP_ROOT,
) -> int:
    """Host memory the node's models may take: ``configured`` if given, else
    the container's memory limit (else the machine's memory), minus the
    buffer and ``reserved_bytes`` (see :func:`capacity_after_buffer`)."""
    total = host_total_bytes(
        configured, cgroup_memory_limit(cgroup_root), psutil.virtual_memory().total
    )
    return capacity_after_buffer(total, buffer_fraction, reserved_bytes)


def gpu_capacity_bytes(
    buffer_fraction: float = 0.1,
    reserved_bytes: int = 0,
    devices: Sequence[int] | None = None,
) -> int | None:
    """GPU memory the node's models may take: the devices' total memory from
    NVML minus the buffer and ``reserved_bytes``; ``None`` without a GPU."""
    total = device_total_bytes(gpu_snapshot(devices))
    if total is None:
        return None
    return capacity_after_buffer(total, buffer_fraction, reserved_bytes)
