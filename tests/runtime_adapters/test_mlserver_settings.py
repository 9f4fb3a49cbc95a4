"""The pure parts of the MLServer adapter: which file is the model, what
``model-settings.json`` says, what size is reported. No server runs here."""

from __future__ import annotations

import json
import pathlib

import pytest

from mesh.core import errors, interfaces
from runtime_adapters import mlserver, mlserver_formats

FOLDER = pathlib.Path("/models/m1")


# -- building model-settings.json -------------------------------------------


def test_names_the_model_by_its_id_and_points_at_its_file() -> None:
    settings = mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.joblib"])
    assert settings == {
        "name": "m1",
        "implementation": "meshserve_sklearn.SKLearnModel",
        "parameters": {"uri": "/models/m1/model.joblib"},
    }


def test_an_mlserver_without_meshserves_classes_gets_mlservers_own_sklearn_class() -> None:
    image = mlserver_formats.IMAGE_MODEL_TYPES
    settings = mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.joblib"], None, image)
    assert settings["implementation"] == "mlserver_sklearn.SKLearnModel"


def test_uses_the_xgboost_implementation_for_xgboost() -> None:
    settings = mlserver.build_model_settings("m1", "xgboost", FOLDER, ["model.json"])
    assert settings["implementation"] == "mlserver_xgboost.XGBoostModel"
    assert settings["parameters"]["uri"] == "/models/m1/model.json"


def test_keeps_user_implementation_but_forces_model_id() -> None:
    user = {
        "name": "iris-v3",
        "implementation": "my_package.MyModel",
        "max_batch_size": 8,
        "parameters": {"uri": "./clf.pkl", "version": "3", "extra": {"predict_fn": "x"}},
    }
    settings = mlserver.build_model_settings("m1", "sklearn", FOLDER, ["clf.pkl"], user)
    assert settings["name"] == "m1"
    assert settings["implementation"] == "my_package.MyModel"
    assert settings["max_batch_size"] == 8
    assert settings["parameters"] == {
        "uri": "/models/m1/clf.pkl",
        "version": "3",
        "extra": {"predict_fn": "x"},
    }


def test_fills_in_what_the_user_settings_leave_out() -> None:
    user = {"parameters": {"version": "2"}}
    settings = mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.pkl"], user)
    assert settings["implementation"] == "meshserve_sklearn.SKLearnModel"
    assert settings["parameters"] == {"version": "2", "uri": "/models/m1/model.pkl"}


def test_does_not_change_the_users_mapping() -> None:
    user = {"name": "x", "parameters": {"uri": "model.joblib"}}
    mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.joblib"], user)
    assert user == {"name": "x", "parameters": {"uri": "model.joblib"}}


def test_accepts_its_own_settings_again_on_a_reload() -> None:
    first = mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.joblib"])
    files = ["model.joblib", "model-settings.json"]
    again = mlserver.build_model_settings("m1", "sklearn", FOLDER, files, first)
    assert again == first


def test_accepts_a_user_uri_naming_a_subfolder() -> None:
    user = {"parameters": {"uri": "./artifacts"}}
    files = ["artifacts/model.joblib"]
    settings = mlserver.build_model_settings("m1", "sklearn", FOLDER, files, user)
    assert settings["parameters"]["uri"] == "/models/m1/artifacts"


def test_accepts_a_file_scheme_uri_inside_the_folder() -> None:
    user = {"parameters": {"uri": "file:///models/m1/model.joblib"}}
    settings = mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.joblib"], user)
    assert settings["parameters"]["uri"] == "/models/m1/model.joblib"


@pytest.mark.parametrize("uri", ["../m2/model.joblib", "/etc/passwd", "sub/../../m2/model.joblib"])
def test_refuses_a_user_uri_outside_the_model_folder(uri: str) -> None:
    user = {"parameters": {"uri": uri}}
    with pytest.raises(errors.ModelLoadFailed, match="outside the model folder"):
        mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.joblib"], user)


def test_refuses_a_remote_user_uri() -> None:
    user = {"parameters": {"uri": "s3://bucket/model.joblib"}}
    with pytest.raises(errors.ModelLoadFailed, match="not a file in the model folder"):
        mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.joblib"], user)


def test_refuses_a_user_uri_naming_a_missing_file() -> None:
    user = {"parameters": {"uri": "./gone.joblib"}}
    with pytest.raises(errors.ModelLoadFailed, match="names nothing"):
        mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.joblib"], user)


def test_refuses_user_parameters_that_are_not_an_object() -> None:
    user = {"parameters": ["model.joblib"]}
    with pytest.raises(errors.ModelLoadFailed, match="parameters must be an object"):
        mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.joblib"], user)


def test_refuses_an_unknown_type_naming_the_supported_ones() -> None:
    with pytest.raises(errors.ModelLoadFailed) as caught:
        mlserver.build_model_settings("m1", "pmml", FOLDER, ["model.pmml"])
    assert "'pmml'" in caught.value.reason
    assert "sklearn, xgboost, lightgbm, onnx" in caught.value.reason


def test_refuses_an_unknown_type_even_with_a_user_implementation() -> None:
    user = {"implementation": "my_package.MyModel", "parameters": {"uri": "model.pmml"}}
    with pytest.raises(errors.ModelLoadFailed, match="not supported"):
        mlserver.build_model_settings("m1", "pmml", FOLDER, ["model.pmml"], user)


def test_serves_lightgbm_and_onnx_with_their_classes() -> None:
    lgb = mlserver.build_model_settings("m1", "lightgbm", FOLDER, ["model.bst"])
    assert lgb["implementation"] == "mlserver_lightgbm.LightGBMModel"
    assert lgb["parameters"]["uri"] == "/models/m1/model.bst"
    onnx = mlserver.build_model_settings("m1", "onnx", FOLDER, ["model.onnx"])
    assert onnx["implementation"] == "meshserve_onnx.OnnxRuntimeModel"


def test_refuses_onnx_where_the_mlserver_is_not_its_own() -> None:
    with pytest.raises(errors.ModelLoadFailed, match="only by an MLServer the node starts"):
        mlserver.build_model_settings(
            "m1", "onnx", FOLDER, ["model.onnx"], served=mlserver_formats.IMAGE_MODEL_TYPES
        )


# -- server settings --------------------------------------------------------


def test_server_settings_load_nothing_at_start_and_serve_in_process() -> None:
    settings = mlserver.server_settings("127.0.0.1", 1, 2, 3, 16 << 20)
    assert settings["load_models_at_startup"] is False
    assert settings["parallel_workers"] == 0
    assert (settings["http_port"], settings["grpc_port"], settings["metrics_port"]) == (1, 2, 3)
    assert settings["metrics_endpoint"] is None
    assert settings["grpc_max_message_length"] == 16 << 20
    json.dumps(settings)


# -- the folder on disk -----------------------------------------------------


def test_writes_model_settings_into_the_folder(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "m1"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "model.joblib").write_bytes(b"x" * 300)
    (folder / ".complete").write_text("")
    settings, disk = mlserver.prepare_model_folder("m1", "sklearn", folder)
    written = json.loads((folder / "model-settings.json").read_text())
    assert written == settings
    assert written["parameters"]["uri"] == str(folder / "sub" / "model.joblib")
    assert disk == 300


def test_a_folder_loaded_before_keeps_its_model_settings_file_as_it_is(
    tmp_path: pathlib.Path,
) -> None:
    folder = tmp_path / "m1"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(b"x")
    first, _ = mlserver.prepare_model_folder("m1", "sklearn", folder)
    before = (folder / "model-settings.json").stat().st_ino
    again, _ = mlserver.prepare_model_folder("m1", "sklearn", folder)
    assert again == first
    assert (folder / "model-settings.json").stat().st_ino == before  # not replaced


def test_refuses_a_user_model_settings_that_is_not_json(tmp_path: pathlib.Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"x")
    (tmp_path / "model-settings.json").write_text("{not json")
    with pytest.raises(errors.ModelLoadFailed, match="is not JSON"):
        mlserver.prepare_model_folder("m1", "sklearn", tmp_path)


def test_refuses_a_missing_folder(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ModelLoadFailed, match="does not exist"):
        mlserver.prepare_model_folder("m1", "sklearn", tmp_path / "nope")


def test_checks_the_type_before_the_folder(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ModelLoadFailed, match="supported: sklearn, xgboost"):
        mlserver.prepare_model_folder("m1", "pmml", tmp_path / "nope")


# -- the adapter without a server -------------------------------------------


def test_is_a_runtime_adapter_for_mlservers_formats_and_meshserves_classes(
    tmp_path: pathlib.Path,
) -> None:
    config = mlserver.MLServerConfig(model_dir=tmp_path, venv=tmp_path)
    adapter: interfaces.RuntimeAdapter = mlserver.MLServerAdapter(config)  # checked by mypy
    assert adapter.name == "mlserver"
    assert set(adapter.supported_model_types()) == {
        "sklearn",
        "xgboost",
        "lightgbm",
        "onnx",
        "transformer",
        "explainer",
    }
    assert mlserver.MLServerAdapter(config).counts_gpu_memory is False


def test_an_mlserver_reached_at_an_endpoint_serves_no_onnx(tmp_path: pathlib.Path) -> None:
    # seldonio/mlserver has neither onnxruntime nor meshserve's ONNX class.
    config = mlserver.MLServerConfig(model_dir=tmp_path, venv=tmp_path, endpoint="rt:9000")
    assert mlserver.MLServerAdapter(config).supported_model_types() == (
        "sklearn",
        "xgboost",
        "lightgbm",
    )


def test_grpc_target_is_the_endpoint_when_one_is_given(tmp_path: pathlib.Path) -> None:
    config = mlserver.MLServerConfig(model_dir=tmp_path, venv=tmp_path, endpoint="rt:9000")
    assert mlserver.MLServerAdapter(config).grpc_target == "rt:9000"


def test_grpc_target_connects_locally_when_listening_on_all_addresses(
    tmp_path: pathlib.Path,
) -> None:
    config = mlserver.MLServerConfig(
        model_dir=tmp_path, venv=tmp_path, host="0.0.0.0", grpc_port=8001
    )
    assert mlserver.MLServerAdapter(config).grpc_target == "127.0.0.1:8001"


def test_grpc_target_before_start_with_no_port_is_unavailable(tmp_path: pathlib.Path) -> None:
    adapter = mlserver.MLServerAdapter(mlserver.MLServerConfig(model_dir=tmp_path, venv=tmp_path))
    with pytest.raises(errors.RuntimeUnavailable, match="not been started"):
        _ = adapter.grpc_target


async def test_start_without_mlserver_installed_says_how_to_install(
    tmp_path: pathlib.Path,
) -> None:
    adapter = mlserver.MLServerAdapter(mlserver.MLServerConfig(model_dir=tmp_path, venv=tmp_path))
    with pytest.raises(errors.RuntimeUnavailable, match="make install"):
        await adapter.start()


async def test_not_ready_before_start(tmp_path: pathlib.Path) -> None:
    adapter = mlserver.MLServerAdapter(mlserver.MLServerConfig(model_dir=tmp_path, venv=tmp_path))
    assert await adapter.ready() is False


def test_a_load_failure_is_named_by_the_last_traceback_line_of_its_message() -> None:
    log = [
        "Traceback (most recent call last):",
        '  File "joblib/numpy_pickle.py", line 632, in _unpickle',
        "KeyError: 29",
        "2026-12-04 INFO something else",
        "Traceback (most recent call last):",
        "KeyError: 29",
    ]
    assert mlserver.exception_line("29", log) == "KeyError: 29"
    assert mlserver.exception_line("pop from empty list", ["IndexError: pop from empty list"]) == (
        "IndexError: pop from empty list"
    )
    assert mlserver.exception_line("29", ["ValueError: 30"]) == ""
