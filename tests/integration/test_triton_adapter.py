"""The Triton adapter against a real ``tritonserver``: Python-backend models
load under the mesh's id and answer correctly, unload waits until they are
really gone, broken models fail with Triton's words while the others keep
serving, sizes are measured from the process tree, and ``stop`` leaves
nothing behind."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import psutil
import pytest
import tritonclient.grpc.aio as tc
from tritonclient.utils import InferenceServerException

from mesh.core import errors
from mesh.edges import ports
from runtime_adapters import memory
from runtime_adapters.triton import adapter as triton_adapter
from tests.integration import mesh_fixtures, triton_fixtures

pytestmark = pytest.mark.integration

STUB = "triton_python_backend_stub"
SHM_PREFIX = "triton_python_backend_shm_region"
MIB = 1024 * 1024


async def infer(
    target: str, model_id: str, inputs: Mapping[str, npt.NDArray[np.float32]]
) -> dict[str, npt.NDArray[np.generic]]:
    """One V2 ModelInfer straight to Triton; every output by name."""
    client = tc.InferenceServerClient(target)
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = tc.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = await client.infer(model_id, tensors)
        response = result.get_response()
        return {o.name: result.as_numpy(o.name) for o in response.outputs}
    finally:
        await client.close()


async def states(target: str, model_id: str) -> set[str]:
    """The model's states in Triton's repository index (empty: never seen)."""
    client = tc.InferenceServerClient(target)
    try:
        index = await client.get_model_repository_index()
        return {m.state for m in index.models if m.name == model_id}
    finally:
        await client.close()


def stubs(adapter: triton_adapter.TritonAdapter) -> set[int]:
    """Pids of the Python-backend stub processes under our Triton."""
    assert adapter.pid is not None
    return {
        p.pid
        for p in memory.process_tree(adapter.pid)[1:]
        if p.name().startswith("triton_python_b")  # /proc truncates names to 15 chars
    }


def shared_memory_regions() -> set[str]:
    return {p.name for p in pathlib.Path("/dev/shm").glob(f"{SHM_PREFIX}*")}


def regions_mapped_by(family: list[psutil.Process]) -> set[str]:
    """The Python backend's shared-memory regions these processes map (other
    Tritons, in a parallel test worker, have their own: not these)."""
    found = set()
    for proc in family:
        for line in pathlib.Path(f"/proc/{proc.pid}/maps").read_text().splitlines():
            name = line.rsplit("/", 1)[-1]
            if "/dev/shm/" in line and name.startswith(SHM_PREFIX):
                found.add(name.removesuffix(" (deleted)"))
    return found


def assert_answers(
    got: Mapping[str, npt.NDArray[np.generic]], sample: triton_fixtures.TritonSample
) -> None:
    assert set(got) == set(sample.expected)
    for name, expected in sample.expected.items():
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name].astype(np.float64), expected.astype(np.float64))


# -- serving ------------------------------------------------------------------


async def test_serves_a_python_model_under_the_model_id_keeping_the_users_config(
    triton_runtime: triton_adapter.TritonAdapter,
    place_triton_model: triton_fixtures.TritonPlacer,
    double_sample: triton_fixtures.TritonSample,
) -> None:
    model_id, folder = place_triton_model(double_sample)

    await triton_runtime.load(model_id, "python", folder)

    got = await infer(triton_runtime.grpc_target, model_id, double_sample.inputs)
    assert_answers(got, double_sample)
    assert (folder / "1" / "model.py").is_file()
    config = (folder / "config.pbtxt").read_text()
    assert f'name: "{model_id}"' in config
    assert "# The user's own config" in config
    assert 'name: "double"' not in config


async def test_generates_a_config_for_a_python_model_that_declares_its_own_tensors(
    triton_runtime: triton_adapter.TritonAdapter,
    place_triton_model: triton_fixtures.TritonPlacer,
    add_sample: triton_fixtures.TritonSample,
) -> None:
    model_id, folder = place_triton_model(add_sample)

    await triton_runtime.load(model_id, "python", folder)

    got = await infer(triton_runtime.grpc_target, model_id, add_sample.inputs)
    assert_answers(got, add_sample)
    assert (folder / "1" / "model.py").is_file()  # adder.py, under Triton's default name
    assert not (folder / "adder.py").exists()
    assert 'backend: "python"' in (folder / "config.pbtxt").read_text()


async def test_loading_a_loaded_model_again_reports_the_same_size(
    triton_runtime: triton_adapter.TritonAdapter,
    place_triton_model: triton_fixtures.TritonPlacer,
    double_sample: triton_fixtures.TritonSample,
) -> None:
    model_id, folder = place_triton_model(double_sample)
    first = await triton_runtime.load(model_id, "python", folder)

    again = await triton_runtime.load(model_id, "python", folder)

    assert again == first
    got = await infer(triton_runtime.grpc_target, model_id, double_sample.inputs)
    assert_answers(got, double_sample)


# -- unloading ------------------------------------------------------------------


async def test_unload_returns_only_once_the_model_and_its_stub_process_are_gone(
    triton_runtime: triton_adapter.TritonAdapter,
    place_triton_model: triton_fixtures.TritonPlacer,
    double_sample: triton_fixtures.TritonSample,
) -> None:
    target = triton_runtime.grpc_target
    model_id, folder = place_triton_model(double_sample)
    before = stubs(triton_runtime)
    await triton_runtime.load(model_id, "python", folder)
    own = stubs(triton_runtime) - before
    assert len(own) == 1

    await triton_runtime.unload(model_id)

    assert await states(target, model_id) == {"UNAVAILABLE"}
    assert not own & stubs(triton_runtime)
    with pytest.raises(InferenceServerException) as caught:
        await infer(target, model_id, double_sample.inputs)
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    assert "unknown model" in str(caught.value)  # what the router reads as "lost"
    await triton_runtime.unload(model_id)  # a second unload is not an error
    assert folder.is_dir()  # the folder is the puller's, left in place


async def test_unloading_a_model_triton_never_had_is_not_an_error(
    triton_runtime: triton_adapter.TritonAdapter,
) -> None:
    await triton_runtime.unload("never-loaded-here")


# -- failures -----------------------------------------------------------------


async def test_broken_model_fails_with_tritons_message_and_triton_keeps_serving(
    triton_runtime: triton_adapter.TritonAdapter,
    place_triton_model: triton_fixtures.TritonPlacer,
    broken_sample: triton_fixtures.TritonSample,
    double_sample: triton_fixtures.TritonSample,
) -> None:
    good_id, good_folder = place_triton_model(double_sample)
    await triton_runtime.load(good_id, "python", good_folder)
    bad_id, bad_folder = place_triton_model(broken_sample)

    with pytest.raises(errors.ModelLoadFailed) as caught:
        await triton_runtime.load(bad_id, "python", bad_folder)

    assert caught.value.model_id == bad_id
    assert triton_fixtures.BROKEN_MESSAGE in caught.value.reason
    assert caught.value.reason.startswith("Triton: ")
    assert await triton_runtime.ready()  # one failed model does not make Triton unready
    got = await infer(triton_runtime.grpc_target, good_id, double_sample.inputs)
    assert_answers(got, double_sample)


async def test_a_config_triton_refuses_fails_with_the_reason_from_tritons_log(
    triton_runtime: triton_adapter.TritonAdapter,
    place_triton_model: triton_fixtures.TritonPlacer,
    double_sample: triton_fixtures.TritonSample,
) -> None:
    model_id, folder = place_triton_model(double_sample)
    (folder / "config.pbtxt").write_text('backend: "python"\nno_such_field: 1\n')

    with pytest.raises(errors.ModelLoadFailed) as caught:
        await triton_runtime.load(model_id, "python", folder)

    assert "no_such_field" in caught.value.reason
    assert await triton_runtime.ready()


async def test_model_type_without_a_backend_here_fails_naming_the_supported_types(
    triton_runtime: triton_adapter.TritonAdapter,
    place_triton_model: triton_fixtures.TritonPlacer,
    double_sample: triton_fixtures.TritonSample,
) -> None:
    model_id, folder = place_triton_model(double_sample)

    with pytest.raises(errors.ModelLoadFailed) as caught:
        await triton_runtime.load(model_id, "onnx", folder)

    assert "onnxruntime backend" in caught.value.reason
    assert "supported: python" in caught.value.reason
    assert not (folder / "1").exists()  # nothing was moved


# -- sizes ----------------------------------------------------------------------


async def test_reported_size_covers_the_stub_process_the_model_started(
    triton_runtime: triton_adapter.TritonAdapter,
    place_triton_model: triton_fixtures.TritonPlacer,
    double_sample: triton_fixtures.TritonSample,
) -> None:
    model_id, folder = place_triton_model(double_sample)
    before = stubs(triton_runtime)

    size = await triton_runtime.load(model_id, "python", folder)

    (stub,) = stubs(triton_runtime) - before
    stub_rss = psutil.Process(stub).memory_info().rss
    assert stub_rss > 20 * MIB  # a Python interpreter with numpy
    assert size >= stub_rss
    assert size < stub_rss + 20 * MIB


async def test_a_model_holding_200_mib_is_measured_within_20_percent_of_that(
    triton_runtime: triton_adapter.TritonAdapter,
    place_triton_model: triton_fixtures.TritonPlacer,
    double_sample: triton_fixtures.TritonSample,
    triton_sample_dir: pathlib.Path,
) -> None:
    ballast = triton_fixtures.write_ballast_sample(triton_sample_dir / "ballast-200", 200)
    plain_id, plain_folder = place_triton_model(double_sample)
    heavy_id, heavy_folder = place_triton_model(ballast)

    plain = await triton_runtime.load(plain_id, "python", plain_folder)
    heavy = await triton_runtime.load(heavy_id, "python", heavy_folder)

    assert abs((heavy - plain) - 200 * MIB) <= 0.2 * 200 * MIB
    got = await infer(triton_runtime.grpc_target, heavy_id, ballast.inputs)
    assert_answers(got, ballast)
    await triton_runtime.unload(heavy_id)  # give the memory back to the session


# -- the process ------------------------------------------------------------------


async def test_is_ready_on_a_local_grpc_target(
    triton_runtime: triton_adapter.TritonAdapter,
) -> None:
    assert await triton_runtime.ready()
    host, _, port = triton_runtime.grpc_target.rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0
    assert triton_runtime.supported_model_types() == ("python",)


async def test_connects_to_a_triton_already_running_and_measures_its_process(
    triton_runtime: triton_adapter.TritonAdapter,
    place_triton_model: triton_fixtures.TritonPlacer,
    triton_sample_dir: pathlib.Path,
) -> None:
    ballast = triton_fixtures.write_ballast_sample(triton_sample_dir / "ballast-64", 64)
    remote = triton_adapter.TritonAdapter(
        triton_adapter.TritonConfig(
            model_dir=triton_runtime.config.model_dir,
            endpoint=triton_runtime.grpc_target,
            start_timeout_seconds=5,
        )
    )
    await remote.start()
    assert remote.pid == triton_runtime.pid  # found by the port it listens on
    model_id, folder = place_triton_model(ballast)

    size = await remote.load(model_id, "python", folder)
    await remote.stop()

    assert size > 64 * MIB  # measured: the prediction is 41 MiB
    assert await triton_runtime.ready()
    got = await infer(triton_runtime.grpc_target, model_id, ballast.inputs)
    assert_answers(got, ballast)
    await triton_runtime.unload(model_id)


async def test_waiting_for_an_endpoint_that_never_answers_is_unavailable(
    tmp_path: pathlib.Path,
) -> None:
    config = triton_adapter.TritonConfig(
        model_dir=tmp_path,
        endpoint=f"127.0.0.1:{ports.free_port()}",
        start_timeout_seconds=0.5,
    )
    with pytest.raises(errors.RuntimeUnavailable, match="not ready within"):
        await triton_adapter.TritonAdapter(config).start()


async def test_stop_leaves_no_tritonserver_stub_or_shared_memory_behind(
    triton_venv: pathlib.Path, tmp_path: pathlib.Path, double_sample: triton_fixtures.TritonSample
) -> None:
    model_dir = tmp_path / "models"
    adapter = triton_adapter.TritonAdapter(
        triton_adapter.TritonConfig(model_dir=model_dir, venv=triton_venv)
    )
    await adapter.start()
    model_id, folder = triton_fixtures.TritonPlacer(model_dir)(double_sample)
    await adapter.load(model_id, "python", folder)
    pid = adapter.pid
    assert pid is not None
    family = memory.process_tree(pid)
    assert len(family) == 2  # tritonserver and the model's stub
    regions = regions_mapped_by(family)
    assert regions, "the Python backend maps no shared memory: the check below would be empty"

    await adapter.stop()

    _gone, alive = psutil.wait_procs(family, timeout=5)
    assert not alive, f"still running after stop: {alive}"
    assert not regions & shared_memory_regions(), "shared memory left behind"
    assert not await adapter.ready()
    await adapter.stop()  # idempotent


async def test_a_triton_that_died_is_unavailable_and_its_log_says_why(
    triton_venv: pathlib.Path, tmp_path: pathlib.Path, double_sample: triton_fixtures.TritonSample
) -> None:
    model_dir = tmp_path / "models"
    adapter = triton_adapter.TritonAdapter(
        triton_adapter.TritonConfig(model_dir=model_dir, venv=triton_venv)
    )
    await adapter.start()
    try:
        await mesh_fixtures.kill_runtime(adapter)
        model_id, folder = triton_fixtures.TritonPlacer(model_dir)(double_sample)

        assert not await adapter.ready()
        with pytest.raises(errors.RuntimeUnavailable, match="-9"):
            await adapter.load(model_id, "python", folder)
    finally:
        await adapter.stop()
