"""Memory measurement shared by the runtime adapters: RSS of a process tree,
GPU memory through NVML (a fake NVML here; the real one where a GPU exists),
and a node's capacity from its cgroup or a configured size."""

from __future__ import annotations

import dataclasses
import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from runtime_adapters import memory

GIB = 1024**3


# -- cgroups and capacity ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("max\n", None),
        ("9223372036854771712\n", None),  # cgroup v1 "no limit"
        ("2147483648\n", 2 * GIB),
        ("", None),
        ("lots", None),
        ("0", None),
    ],
)
def test_reads_a_cgroup_limit_file(text: str, limit: int | None) -> None:
    assert memory.parse_cgroup_limit(text) == limit


def test_prefers_cgroup_v2_over_v1(tmp_path: pathlib.Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(4 * GIB))
    assert memory.cgroup_memory_limit(tmp_path) == 4 * GIB
    (tmp_path / "memory.max").write_text(str(2 * GIB))
    assert memory.cgroup_memory_limit(tmp_path) == 2 * GIB


def test_no_cgroup_files_means_no_limit(tmp_path: pathlib.Path) -> None:
    assert memory.cgroup_memory_limit(tmp_path) is None


def test_a_configured_size_wins_then_the_limit_then_the_machine() -> None:
    assert memory.host_total_bytes(3 * GIB, 2 * GIB, 8 * GIB) == 3 * GIB
    assert memory.host_total_bytes(None, 2 * GIB, 8 * GIB) == 2 * GIB
    assert memory.host_total_bytes(None, 16 * GIB, 8 * GIB) == 8 * GIB
    assert memory.host_total_bytes(None, None, 8 * GIB) == 8 * GIB


def test_capacity_keeps_a_buffer_and_what_is_reserved() -> None:
    assert memory.capacity_after_buffer(10 * GIB, 0.1) == 9 * GIB
    assert memory.capacity_after_buffer(10 * GIB, 0.1, GIB) == 8 * GIB
    assert memory.capacity_after_buffer(GIB, 0.5, 2 * GIB) == 0
    with pytest.raises(ValueError, match="buffer_fraction"):
        memory.capacity_after_buffer(GIB, 1.0)


def test_host_capacity_comes_from_the_cgroup_limit(tmp_path: pathlib.Path) -> None:
    (tmp_path / "memory.max").write_text(str(GIB))
    assert memory.host_capacity_bytes(buffer_fraction=0.25, cgroup_root=tmp_path) == GIB * 3 // 4
    assert memory.host_capacity_bytes(2 * GIB, 0.5, cgroup_root=tmp_path) == GIB


def test_host_capacity_without_a_limit_is_the_machines_memory(tmp_path: pathlib.Path) -> None:
    total = psutil.virtual_memory().total
    assert memory.host_capacity_bytes(buffer_fraction=0.0, cgroup_root=tmp_path) == total


# -- processes ---------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child process holding ~50 MB."""
    code = "import sys, time; b = bytearray(50 * 1024 * 1024); sys.stdout.write('ok\\n'); "
    code += "sys.stdout.flush(); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ok\n"
    yield proc
    proc.kill()
    proc.wait()


def test_tree_rss_counts_the_children(sleeper: subprocess.Popen[bytes]) -> None:
    me = psutil.Process()
    alone = me.memory_info().rss
    tree = memory.tree_rss(me.pid)
    assert tree is not None
    assert tree - alone >= 50 * 1024 * 1024
    assert sleeper.pid in [p.pid for p in memory.process_tree(me.pid)]


def test_tree_rss_of_a_process_that_is_gone_is_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert memory.tree_rss(proc.pid) is None
    assert memory.process_tree(proc.pid) == []
    assert memory.measure(proc.pid) == memory.Usage(host_bytes=None)


def test_measure_without_a_process_reads_nothing() -> None:
    assert memory.measure(None) == memory.Usage(host_bytes=None)


def test_finds_the_process_listening_on_a_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert memory.process_listening_on(s.getsockname()[1]) == psutil.Process().pid


def test_nobody_listening_is_none() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening
        assert memory.process_listening_on(s.getsockname()[1]) is None


def test_host_growth_needs_both_readings() -> None:
    assert memory.host_growth(memory.Usage(100), memory.Usage(150)) == 50
    assert memory.host_growth(memory.Usage(None), memory.Usage(150)) is None


# -- GPU figures (pure) --------------------------------------------------------------------

SNAPSHOT = memory.GpuSnapshot(
    devices=(memory.GpuDevice(0, 80 * GIB, 10 * GIB), memory.GpuDevice(1, 80 * GIB, 2 * GIB)),
    processes=(
        memory.GpuProcess(100, 0, 3 * GIB),
        memory.GpuProcess(101, 1, GIB),
        memory.GpuProcess(102, 0, None),
        memory.GpuProcess(999, 0, 6 * GIB),
    ),
)


def test_gpu_memory_of_a_tree_sums_its_processes_on_every_device() -> None:
    assert memory.tree_gpu_bytes(SNAPSHOT, [100, 101, 102]) == 4 * GIB
    assert memory.tree_gpu_bytes(SNAPSHOT, [5]) is None
    assert memory.tree_gpu_bytes(None, [100]) is None


def test_device_figures_add_up_every_gpu() -> None:
    assert memory.device_used_bytes(SNAPSHOT) == 12 * GIB
    assert memory.device_total_bytes(SNAPSHOT) == 160 * GIB
    assert memory.device_total_bytes(memory.GpuSnapshot(())) is None


def test_gpu_growth_prefers_the_trees_own_figure() -> None:
    before = memory.usage_of(0, SNAPSHOT, [100])
    grown = dataclasses.replace(
        SNAPSHOT,
        processes=(memory.GpuProcess(100, 0, 5 * GIB),),
        devices=(memory.GpuDevice(0, 80 * GIB, 30 * GIB),),
    )
    after = memory.usage_of(0, grown, [100])
    assert memory.gpu_growth(before, after) == 2 * GIB


def test_a_first_gpu_model_counts_from_zero() -> None:
    before = memory.usage_of(0, SNAPSHOT, [7])  # the runtime holds no GPU memory yet
    after = memory.usage_of(0, memory.GpuSnapshot(SNAPSHOT.devices, SNAPSHOT.processes), [100])
    assert memory.gpu_growth(before, after) == 3 * GIB


def test_gpu_growth_falls_back_to_the_device_when_the_tree_is_hidden() -> None:
    busier = memory.GpuSnapshot((memory.GpuDevice(0, 80 * GIB, 13 * GIB),), ())
    quieter = memory.GpuSnapshot((memory.GpuDevice(0, 80 * GIB, 10 * GIB),), ())
    before = memory.usage_of(0, quieter, [1])
    after = memory.usage_of(0, busier, [1])
    assert memory.gpu_growth(before, after) == 3 * GIB


def test_no_gpu_means_no_gpu_growth() -> None:
    assert memory.gpu_growth(memory.Usage(1), memory.Usage(2)) is None


# -- NVML, faked --------------------------------------------------------------------------


class FakeNvmlError(Exception):
    pass


@dataclasses.dataclass
class FakeNvml:
    """The few pynvml calls we make, over two fake GPUs."""

    processes: dict[int, list[tuple[int, int | None]]]
    NVMLError: type[Exception] = FakeNvmlError

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return type("Memory", (), {"total": 16 * GIB, "used": (handle + 1) * GIB})()

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        return [
            type("Proc", (), {"pid": pid, "usedGpuMemory": used})()
            for pid, used in self.processes.get(handle, [])
        ]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Any]:
        raise FakeNvmlError("not supported")


def fake_gpus(
    monkeypatch: pytest.MonkeyPatch, processes: dict[int, list[tuple[int, int | None]]]
) -> None:
    monkeypatch.setattr(memory, "NVML", memory.Nvml(lambda: FakeNvml(processes)))


def test_snapshot_reads_every_gpu_and_its_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, {0: [(10, GIB)], 1: [(10, 2 * GIB), (11, None)]})

    snapshot = memory.gpu_snapshot()

    assert snapshot is not None
    assert snapshot.devices == (
        memory.GpuDevice(0, 16 * GIB, GIB),
        memory.GpuDevice(1, 16 * GIB, 2 * GIB),
    )
    assert set(snapshot.processes) == {
        memory.GpuProcess(10, 0, GIB),
        memory.GpuProcess(10, 1, 2 * GIB),
        memory.GpuProcess(11, 1, None),
    }
    assert memory.gpu_snapshot(devices=[1, 7]) == memory.GpuSnapshot(
        (memory.GpuDevice(1, 16 * GIB, 2 * GIB),),
        (memory.GpuProcess(10, 1, 2 * GIB), memory.GpuProcess(11, 1, None)),
    )


def test_gpu_capacity_is_the_devices_memory_minus_the_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_gpus(monkeypatch, {})
    assert memory.has_gpu()
    assert memory.gpu_capacity_bytes(buffer_fraction=0.25) == 24 * GIB
    assert memory.gpu_capacity_bytes(0.0, GIB, devices=[0]) == 15 * GIB


def test_measure_reads_the_gpu_memory_of_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    me = psutil.Process().pid
    fake_gpus(monkeypatch, {0: [(me, 3 * GIB)]})
    usage = memory.measure(me)
    assert usage.gpu_process_bytes == 3 * GIB
    assert usage.gpu_device_bytes == 3 * GIB
    assert memory.measure(me, gpu=False).gpu_device_bytes is None


def test_nvml_failing_mid_way_reads_as_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(FakeNvml):
        def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
            raise FakeNvmlError("GPU is lost")

    monkeypatch.setattr(memory, "NVML", memory.Nvml(lambda: Broken({})))
    assert memory.gpu_snapshot() is None
    assert memory.gpu_capacity_bytes() is None


def test_nvml_is_initialised_once() -> None:
    calls: list[int] = []

    def loader() -> None:
        calls.append(1)

    nvml = memory.Nvml(loader)
    assert nvml.module() is None
    assert nvml.module() is None
    assert calls == [1]


# -- NVML, real ----------------------------------------------------------------------------


def test_without_a_gpu_every_gpu_figure_is_none() -> None:
    if memory.has_gpu():
        pytest.skip("this machine has a GPU")
    assert memory.gpu_snapshot() is None
    assert memory.gpu_capacity_bytes() is None
    assert memory.measure(psutil.Process().pid).gpu_device_bytes is None


def test_nvml_reports_the_gpus_of_this_machine() -> None:
    if not memory.has_gpu():
        pytest.skip("no GPU here (NVML finds no driver or no device)")
    snapshot = memory.gpu_snapshot()
    assert snapshot is not None
    for device in snapshot.devices:
        assert 0 <= device.used_bytes <= device.total_bytes
    total = memory.device_total_bytes(snapshot)
    capacity = memory.gpu_capacity_bytes(buffer_fraction=0.1)
    assert total is not None
    assert capacity is not None
    assert 0 < capacity < total
