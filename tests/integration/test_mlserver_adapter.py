"""The MLServer adapter against a real MLServer: models load and answer what
their own library answers, unload, fail with the runtime's words, and the
process goes away with ``stop``."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import numpy.typing as npt
import psutil
import pytest
import tritonclient.grpc.aio as triton
from tritonclient.utils import InferenceServerException

from mesh.core import errors
from mesh.edges import ports
from meshserve import samples
from runtime_adapters import mlserver
from tests.integration import mesh_fixtures, mlserver_fixtures

pytestmark = pytest.mark.integration

MIN_SIZE = mlserver.MLServerConfig.min_model_size_bytes


async def infer(
    target: str, model_id: str, inputs: npt.NDArray[np.float64], output: str = "predict"
) -> npt.NDArray[np.generic]:
    """One V2 ModelInfer straight to the runtime: a single FP64 input."""
    client = triton.InferenceServerClient(target)
    try:
        tensor = triton.InferInput("input-0", list(inputs.shape), "FP64")
        tensor.set_data_from_numpy(inputs)
        result = await client.infer(
            model_id, [tensor], outputs=[triton.InferRequestedOutput(output)]
        )
        answer: npt.NDArray[np.generic] = result.as_numpy(output)
        return answer
    finally:
        await client.close()


async def model_ready(target: str, model_id: str) -> bool:
    """ModelReady, with MLServer's error for an unknown model read as false."""
    client = triton.InferenceServerClient(target)
    try:
        return bool(await client.is_model_ready(model_id))
    except InferenceServerException:
        return False
    finally:
        await client.close()


@pytest.mark.parametrize("train", ["iris_sample", "wine_sample", "diabetes_sample"])
async def test_serves_an_sklearn_model_with_sklearns_own_predictions(
    train: str,
    request: pytest.FixtureRequest,
    mlserver_runtime: mlserver.MLServerAdapter,
    place_model: mlserver_fixtures.ModelPlacer,
) -> None:
    sample: samples.Sample = request.getfixturevalue(train)
    model_id, folder = place_model(sample)

    await mlserver_runtime.load(model_id, "sklearn", folder)

    got = await infer(mlserver_runtime.grpc_target, model_id, sample.inputs)
    assert got.dtype == sample.expected.dtype  # INT64 classes, FP64 regression values
    np.testing.assert_allclose(got.ravel().astype(np.float64), sample.expected.astype(np.float64))


async def test_serves_an_xgboost_model_with_xgboosts_own_predictions(
    mlserver_runtime: mlserver.MLServerAdapter,
    place_model: mlserver_fixtures.ModelPlacer,
    xgboost_sample: samples.Sample,
) -> None:
    model_id, folder = place_model(xgboost_sample)

    await mlserver_runtime.load(model_id, "xgboost", folder)

    got = await infer(mlserver_runtime.grpc_target, model_id, xgboost_sample.inputs)
    np.testing.assert_array_equal(got.ravel(), xgboost_sample.expected)


async def test_keeps_the_users_model_settings_parameters(
    mlserver_runtime: mlserver.MLServerAdapter,
    place_model: mlserver_fixtures.ModelPlacer,
    iris_sample: samples.Sample,
) -> None:
    model_id, folder = place_model(iris_sample)
    user = {
        "name": "whatever-the-user-called-it",
        "parameters": {"uri": "./model.joblib", "extra": {"predict_fn": "predict_proba"}},
    }
    (folder / "model-settings.json").write_text(json.dumps(user))

    await mlserver_runtime.load(model_id, "sklearn", folder)

    client = triton.InferenceServerClient(mlserver_runtime.grpc_target)
    try:
        tensor = triton.InferInput("input-0", list(iris_sample.inputs.shape), "FP64")
        tensor.set_data_from_numpy(iris_sample.inputs)
        result = await client.infer(model_id, [tensor])  # no output named: predict_fn decides
        proba = result.as_numpy("predict_proba")
    finally:
        await client.close()
    assert proba.shape == (len(iris_sample.inputs), 3)
    np.testing.assert_array_equal(proba.argmax(axis=1), iris_sample.expected)


async def test_loading_a_loaded_model_again_is_fine(
    mlserver_runtime: mlserver.MLServerAdapter,
    place_model: mlserver_fixtures.ModelPlacer,
    iris_sample: samples.Sample,
) -> None:
    model_id, folder = place_model(iris_sample)
    await mlserver_runtime.load(model_id, "sklearn", folder)

    assert await mlserver_runtime.load(model_id, "sklearn", folder) >= MIN_SIZE
    got = await infer(mlserver_runtime.grpc_target, model_id, iris_sample.inputs)
    np.testing.assert_array_equal(got.ravel(), iris_sample.expected)


async def test_unload_makes_the_model_unavailable(
    mlserver_runtime: mlserver.MLServerAdapter,
    place_model: mlserver_fixtures.ModelPlacer,
    iris_sample: samples.Sample,
) -> None:
    target = mlserver_runtime.grpc_target
    model_id, folder = place_model(iris_sample)
    await mlserver_runtime.load(model_id, "sklearn", folder)
    assert await model_ready(target, model_id)

    await mlserver_runtime.unload(model_id)

    assert not await model_ready(target, model_id)
    with pytest.raises(InferenceServerException, match="not found"):
        await infer(target, model_id, iris_sample.inputs)
    await mlserver_runtime.unload(model_id)  # a second unload is not an error
    assert folder.is_dir()  # the folder is the puller's, left in place


async def test_unloading_a_model_the_runtime_never_had_is_not_an_error(
    mlserver_runtime: mlserver.MLServerAdapter,
) -> None:
    await mlserver_runtime.unload("never-loaded-here")


async def test_corrupt_model_fails_with_the_runtimes_message_and_others_keep_serving(
    mlserver_runtime: mlserver.MLServerAdapter,
    place_model: mlserver_fixtures.ModelPlacer,
    corrupt_sample: samples.Sample,
    iris_sample: samples.Sample,
) -> None:
    good_id, good_folder = place_model(iris_sample)
    await mlserver_runtime.load(good_id, "sklearn", good_folder)
    bad_id, bad_folder = place_model(corrupt_sample)

    with pytest.raises(errors.ModelLoadFailed) as caught:
        await mlserver_runtime.load(bad_id, "sklearn", bad_folder)

    assert caught.value.model_id == bad_id
    runtime_words = caught.value.reason.removeprefix("MLServer: ").rsplit(" (", 1)[0]
    assert runtime_words
    assert runtime_words in mlserver_runtime.log_path.read_text()
    # the exception's whole line, as its traceback ends, not only its str()
    assert runtime_words == "IndexError: pop from empty list"
    assert await mlserver_runtime.ready()
    assert not await model_ready(mlserver_runtime.grpc_target, bad_id)
    got = await infer(mlserver_runtime.grpc_target, good_id, iris_sample.inputs)
    np.testing.assert_array_equal(got.ravel(), iris_sample.expected)


async def test_unknown_model_type_fails_naming_the_supported_types(
    mlserver_runtime: mlserver.MLServerAdapter,
    place_model: mlserver_fixtures.ModelPlacer,
    iris_sample: samples.Sample,
) -> None:
    model_id, folder = place_model(iris_sample)

    with pytest.raises(errors.ModelLoadFailed) as caught:
        await mlserver_runtime.load(model_id, "tensorflow", folder)

    assert "'tensorflow'" in caught.value.reason
    assert "sklearn, xgboost" in caught.value.reason
    assert not (folder / "model-settings.json").exists()


async def test_reported_sizes_are_at_least_the_minimum_and_the_prediction(
    mlserver_runtime: mlserver.MLServerAdapter,
    place_model: mlserver_fixtures.ModelPlacer,
    iris_sample: samples.Sample,
) -> None:
    big = samples.train_wine_forest(mlserver_runtime.config.model_dir / "big-forest", trees=400)
    disk = big.model_file.stat().st_size
    small_id, small_folder = place_model(iris_sample)

    small = await mlserver_runtime.load(small_id, "sklearn", small_folder)
    large = await mlserver_runtime.load("big-forest", "sklearn", big.folder)

    assert small >= MIN_SIZE
    assert large >= disk * mlserver_runtime.config.size_multiplier > MIN_SIZE


async def test_is_ready_on_a_local_grpc_target(
    mlserver_runtime: mlserver.MLServerAdapter,
) -> None:
    assert await mlserver_runtime.ready()
    host, _, port = mlserver_runtime.grpc_target.rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0


async def test_connects_to_a_runtime_already_running_and_leaves_it_running(
    mlserver_runtime: mlserver.MLServerAdapter,
    place_model: mlserver_fixtures.ModelPlacer,
    iris_sample: samples.Sample,
) -> None:
    config = mlserver.MLServerConfig(
        model_dir=mlserver_runtime.config.model_dir,
        venv=mlserver_runtime.config.venv,
        endpoint=mlserver_runtime.grpc_target,
        start_timeout_seconds=5,
    )
    remote = mlserver.MLServerAdapter(config)
    await remote.start()
    model_id, folder = place_model(iris_sample)

    assert await remote.load(model_id, "sklearn", folder) >= MIN_SIZE
    await remote.stop()

    assert await mlserver_runtime.ready()
    got = await infer(mlserver_runtime.grpc_target, model_id, iris_sample.inputs)
    np.testing.assert_array_equal(got.ravel(), iris_sample.expected)


async def test_waiting_for_an_endpoint_that_never_answers_is_unavailable(
    mlserver_venv: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    config = mlserver.MLServerConfig(
        model_dir=tmp_path,
        venv=mlserver_venv,
        endpoint=f"127.0.0.1:{ports.free_port()}",
        start_timeout_seconds=0.5,
    )
    with pytest.raises(errors.RuntimeUnavailable, match="not ready within"):
        await mlserver.MLServerAdapter(config).start()


async def test_stop_leaves_no_mlserver_process_behind(
    mlserver_venv: pathlib.Path,
    tmp_path: pathlib.Path,
    iris_sample: samples.Sample,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(mlserver_venv.parent.parent)  # relative paths, as in a settings file
    model_dir = tmp_path / "models"
    adapter = mlserver.MLServerAdapter(
        mlserver.MLServerConfig(model_dir=model_dir, venv=pathlib.Path(".runtimes/mlserver"))
    )
    await adapter.start()
    pid = adapter.pid
    assert pid is not None
    family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    placed = mlserver_fixtures.ModelPlacer(model_dir)
    model_id, folder = placed(iris_sample)
    await adapter.load(model_id, "sklearn", folder)

    await adapter.stop()

    _gone, alive = psutil.wait_procs(family, timeout=5)
    assert not alive, f"still running after stop: {alive}"
    assert not await adapter.ready()
    await adapter.stop()  # idempotent


async def test_a_runtime_that_died_is_unavailable_and_its_log_says_why(
    mlserver_venv: pathlib.Path, tmp_path: pathlib.Path, iris_sample: samples.Sample
) -> None:
    model_dir = tmp_path / "models"
    adapter = mlserver.MLServerAdapter(
        mlserver.MLServerConfig(model_dir=model_dir, venv=mlserver_venv)
    )
    await adapter.start()
    try:
        await mesh_fixtures.kill_runtime(adapter)
        model_id, folder = mlserver_fixtures.ModelPlacer(model_dir)(iris_sample)

        assert not await adapter.ready()
        with pytest.raises(errors.RuntimeUnavailable, match="-9"):
            await adapter.load(model_id, "sklearn", folder)
    finally:
        await adapter.stop()
