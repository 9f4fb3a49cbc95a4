"""The pure parts of the MLServer adapter: which file is the model, what
``model-settings.json`` says, what size is reported. No server runs here."""

from __future__ import annotations

import json
import pathlib

import pytest

from mesh.core import errors, interfaces
from runtime_adapters import mlserver

FOLDER = pathlib.Path("/models/m1")


# -- choosing the model file ------------------------------------------------


def test_picks_the_one_file_with_the_types_ending() -> None:
    files = ["README.md", "model.joblib", "metrics.csv"]
    assert mlserver.choose_model_file("m1", "sklearn", files) == "model.joblib"


def test_picks_a_pickle_in_a_subfolder() -> None:
    assert mlserver.choose_model_file("m1", "sklearn", ["v1/clf.pkl"]) == "v1/clf.pkl"


def test_picks_an_xgboost_json_but_not_model_settings() -> None:
    files = ["model-settings.json", "booster.json"]
    assert mlserver.choose_model_file("m1", "xgboost", files) == "booster.json"


def test_ignores_hidden_files_and_folders() -> None:
    files = [".complete", ".cache/old.joblib", "model.joblib"]
    assert mlserver.choose_model_file("m1", "sklearn", files) == "model.joblib"


def test_takes_a_single_file_of_any_name() -> None:
    assert mlserver.choose_model_file("m1", "sklearn", ["my-model.bin"]) == "my-model.bin"


def test_prefers_the_name_mlserver_knows_among_several_candidates() -> None:
    files = ["model.joblib", "scaler.joblib"]
    assert mlserver.choose_model_file("m1", "sklearn", files) == "model.joblib"


def test_refuses_several_candidates_without_a_known_name() -> None:
    with pytest.raises(errors.ModelLoadFailed) as caught:
        mlserver.choose_model_file("m1", "sklearn", ["a.joblib", "b.joblib"])
    assert caught.value.model_id == "m1"
    assert "a.joblib, b.joblib" in caught.value.reason
    assert "parameters.uri" in caught.value.reason


def test_refuses_a_folder_without_a_model_file_and_lists_what_is_there() -> None:
    with pytest.raises(errors.ModelLoadFailed) as caught:
        mlserver.choose_model_file("m1", "sklearn", ["notes.txt", "data.csv"])
    assert "*.joblib" in caught.value.reason
    assert "data.csv, notes.txt" in caught.value.reason


def test_refuses_an_empty_folder() -> None:
    with pytest.raises(errors.ModelLoadFailed, match="empty"):
        mlserver.choose_model_file("m1", "sklearn", ["model-settings.json"])


def test_lists_at_most_ten_files_in_an_error() -> None:
    files = [f"f{i:02}.txt" for i in range(25)]
    with pytest.raises(errors.ModelLoadFailed) as caught:
        mlserver.choose_model_file("m1", "sklearn", files)
    assert "f09.txt and 15 more" in caught.value.reason
    assert "f10.txt" not in caught.value.reason


# -- building model-settings.json -------------------------------------------


def test_names_the_model_by_its_id_and_points_at_its_file() -> None:
    settings = mlserver.build_model_settings("m1", "sklearn", FOLDER, ["model.joblib"])
    assert settings == {
        "name": "m1",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "/models/m1/model.joblib"},
    }


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
    assert settings["implementation"] == "mlserver_sklearn.SKLearnModel"
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
        mlserver.build_model_settings("m1", "onnx", FOLDER, ["model.onnx"])
    assert "'onnx'" in caught.value.reason
    assert "sklearn, xgboost" in caught.value.reason


def test_refuses_an_unknown_type_even_with_a_user_implementation() -> None:
    user = {"implementation": "my_package.MyModel", "parameters": {"uri": "model.onnx"}}
    with pytest.raises(errors.ModelLoadFailed, match="not supported"):
        mlserver.build_model_settings("m1", "onnx", FOLDER, ["model.onnx"], user)


def test_every_supported_type_has_file_endings() -> None:
    for model_type in mlserver.IMPLEMENTATIONS:
        assert mlserver.MODEL_FILE_SUFFIXES[model_type]


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
        mlserver.prepare_model_folder("m1", "onnx", tmp_path / "nope")


# -- the adapter without a server -------------------------------------------


def test_is_a_runtime_adapter_for_sklearn_and_xgboost(tmp_path: pathlib.Path) -> None:
    config = mlserver.MLServerConfig(model_dir=tmp_path, venv=tmp_path)
    adapter: interfaces.RuntimeAdapter = mlserver.MLServerAdapter(config)  # checked by mypy
    assert adapter.name == "mlserver"
    assert {"sklearn", "xgboost"} <= set(adapter.supported_model_types())
    assert mlserver.MLServerAdapter(config).counts_gpu_memory is False


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
