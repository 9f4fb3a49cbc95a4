"""The Triton adapter without a server: it is a runtime adapter for Python
models, its address and memory pool follow its config, a type it does not
serve fails before the folder is touched, and sizes follow the rules.
(tests/integration/test_triton_adapter.py drives it against a real Triton.)"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib

import pytest
from tritonclient.grpc import service_pb2

from mesh.core import errors, interfaces
from runtime_adapters import memory, v2_runtime
from runtime_adapters.triton import adapter as triton_adapter


def test_config_refuses_unknown_model_types_and_memory_pools() -> None:
    with pytest.raises(errors.ConfigError, match="unknown"):
        triton_adapter.TritonConfig(model_dir=pathlib.Path("m"), model_types=("python", "jax"))
    with pytest.raises(errors.ConfigError, match="memory_pool"):
        triton_adapter.TritonConfig(model_dir=pathlib.Path("m"), memory_pool="disk")


def test_is_a_runtime_adapter_for_python_models(tmp_path: pathlib.Path) -> None:
    config = triton_adapter.TritonConfig(model_dir=tmp_path, venv=tmp_path)
    adapter: interfaces.RuntimeAdapter = triton_adapter.TritonAdapter(config)  # checked by mypy
    assert adapter.name == "triton"
    assert adapter.supported_model_types() == ("python",)


def test_grpc_target_is_the_endpoint_when_one_is_given(tmp_path: pathlib.Path) -> None:
    config = triton_adapter.TritonConfig(model_dir=tmp_path, endpoint="triton:8001")
    assert triton_adapter.TritonAdapter(config).grpc_target == "triton:8001"


def test_grpc_target_before_start_with_no_port_is_unavailable(tmp_path: pathlib.Path) -> None:
    adapter = triton_adapter.TritonAdapter(triton_adapter.TritonConfig(model_dir=tmp_path))
    with pytest.raises(errors.RuntimeUnavailable, match="not been started"):
        _ = adapter.grpc_target


async def test_start_without_triton_installed_says_how_to_install(tmp_path: pathlib.Path) -> None:
    adapter = triton_adapter.TritonAdapter(
        triton_adapter.TritonConfig(model_dir=tmp_path, venv=tmp_path)
    )
    with pytest.raises(errors.RuntimeUnavailable, match="make install"):
        await adapter.start()


async def test_counts_host_memory_for_python_models_even_beside_a_gpu(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "has_gpu", lambda: True)
    config = triton_adapter.TritonConfig(
        model_dir=tmp_path, endpoint="127.0.0.1:1", start_timeout_seconds=0.1
    )
    python_only = triton_adapter.TritonAdapter(config)
    with contextlib.suppress(errors.RuntimeUnavailable):
        await python_only.start()  # nothing listens there: only the pool choice matters
    assert python_only.counts_gpu_memory is False


async def test_counts_gpu_memory_for_gpu_formats_beside_a_gpu(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "has_gpu", lambda: True)
    config = triton_adapter.TritonConfig(
        model_dir=tmp_path,
        endpoint="127.0.0.1:1",
        model_types=("python", "onnx"),
        start_timeout_seconds=0.1,
    )
    adapter = triton_adapter.TritonAdapter(config)
    with contextlib.suppress(errors.RuntimeUnavailable):
        await adapter.start()
    assert adapter.counts_gpu_memory is True
    host = triton_adapter.TritonAdapter(dataclasses.replace(config, memory_pool="host"))
    assert host.counts_gpu_memory is False


async def test_not_ready_before_start(tmp_path: pathlib.Path) -> None:
    adapter = triton_adapter.TritonAdapter(
        triton_adapter.TritonConfig(model_dir=tmp_path, grpc_port=1)
    )
    assert await adapter.ready() is False


async def test_a_type_it_does_not_serve_fails_before_touching_the_folder(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "m1").mkdir()
    (tmp_path / "m1" / "model.onnx").write_bytes(b"x")
    adapter = triton_adapter.TritonAdapter(triton_adapter.TritonConfig(model_dir=tmp_path))
    with pytest.raises(errors.ModelLoadFailed, match="onnxruntime"):
        await adapter.load("m1", "onnx", tmp_path / "m1")
    assert v2_runtime.list_folder(tmp_path / "m1") == ["model.onnx"]


# -- sizes ----------------------------------------------------------------------------


def statistics(*usages: tuple[str, int]) -> service_pb2.ModelStatisticsResponse:
    response = service_pb2.ModelStatisticsResponse()
    model = response.model_stats.add(name="m1", version="1")
    for kind, size in usages:
        model.memory_usage.add(type=kind, id=0, byte_size=size)
    return response


def test_tritons_own_report_is_read_for_the_counted_pool() -> None:
    report = statistics(("CPU", 100), ("CPU_PINNED", 20), ("GPU", 5000))
    assert triton_adapter.reported_bytes(report, gpu=False) == 120
    assert triton_adapter.reported_bytes(report, gpu=True) == 5000


def test_no_report_is_none_not_zero() -> None:
    assert triton_adapter.reported_bytes(statistics(), gpu=False) is None


def test_size_is_corrected_upward_by_the_larger_observation() -> None:
    assert triton_adapter.model_size(10, 50, None, None, 1) == 50
    assert triton_adapter.model_size(10, 50, 70, None, 1) == 70
    assert triton_adapter.model_size(100, 50, None, None, 1) == 100  # never below the prediction
    assert triton_adapter.model_size(10, None, None, None, 64) == 64


def test_a_reload_keeps_the_size_an_earlier_load_measured() -> None:
    assert triton_adapter.model_size(10, 0, None, 45_000_000, 1) == 45_000_000


def test_a_reload_of_a_loaded_model_reports_its_size_whatever_memory_did_meanwhile() -> None:
    assert triton_adapter.model_size(10, 45_100_000, None, 45_000_000, 1) == 45_000_000
