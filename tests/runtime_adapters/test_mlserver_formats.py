"""Which class serves which model type in MLServer, and which file of a
folder is the model. No server runs here."""

from __future__ import annotations

import pytest

from mesh.core import errors
from runtime_adapters import mlserver_formats

# -- choosing the model file ------------------------------------------------


def test_picks_the_one_file_with_the_types_ending() -> None:
    files = ["README.md", "model.joblib", "metrics.csv"]
    assert mlserver_formats.choose_model_file("m1", "sklearn", files) == "model.joblib"


def test_picks_a_pickle_in_a_subfolder() -> None:
    assert mlserver_formats.choose_model_file("m1", "sklearn", ["v1/clf.pkl"]) == "v1/clf.pkl"


def test_picks_an_xgboost_json_but_not_model_settings() -> None:
    files = ["model-settings.json", "booster.json"]
    assert mlserver_formats.choose_model_file("m1", "xgboost", files) == "booster.json"


def test_ignores_hidden_files_and_folders() -> None:
    files = [".complete", ".cache/old.joblib", "model.joblib"]
    assert mlserver_formats.choose_model_file("m1", "sklearn", files) == "model.joblib"


def test_takes_a_single_file_of_any_name() -> None:
    assert mlserver_formats.choose_model_file("m1", "sklearn", ["my-model.bin"]) == "my-model.bin"


def test_prefers_the_name_mlserver_knows_among_several_candidates() -> None:
    files = ["model.joblib", "scaler.joblib"]
    assert mlserver_formats.choose_model_file("m1", "sklearn", files) == "model.joblib"


def test_refuses_several_candidates_without_a_known_name() -> None:
    with pytest.raises(errors.ModelLoadFailed) as caught:
        mlserver_formats.choose_model_file("m1", "sklearn", ["a.joblib", "b.joblib"])
    assert caught.value.model_id == "m1"
    assert "a.joblib, b.joblib" in caught.value.reason
    assert "parameters.uri" in caught.value.reason


def test_refuses_a_folder_without_a_model_file_and_lists_what_is_there() -> None:
    with pytest.raises(errors.ModelLoadFailed) as caught:
        mlserver_formats.choose_model_file("m1", "sklearn", ["notes.txt", "data.csv"])
    assert "*.joblib" in caught.value.reason
    assert "data.csv, notes.txt" in caught.value.reason


def test_refuses_an_empty_folder() -> None:
    with pytest.raises(errors.ModelLoadFailed, match="empty"):
        mlserver_formats.choose_model_file("m1", "sklearn", ["model-settings.json"])


def test_lists_at_most_ten_files_in_an_error() -> None:
    files = [f"f{i:02}.txt" for i in range(25)]
    with pytest.raises(errors.ModelLoadFailed) as caught:
        mlserver_formats.choose_model_file("m1", "sklearn", files)
    assert "f09.txt and 15 more" in caught.value.reason
    assert "f10.txt" not in caught.value.reason


def test_picks_a_lightgbm_booster_saved_as_text() -> None:
    assert mlserver_formats.choose_model_file("m1", "lightgbm", ["booster.txt"]) == "booster.txt"
    files = ["model.bst", "feature_names.txt"]
    assert mlserver_formats.choose_model_file("m1", "lightgbm", files) == "model.bst"


def test_picks_the_onnx_file_of_a_triton_repository_folder() -> None:
    files = ["config.pbtxt", "1/model.onnx"]
    assert mlserver_formats.choose_model_file("m1", "onnx", files) == "1/model.onnx"


def test_picks_the_latest_version_of_a_triton_repository_folder() -> None:
    files = ["config.pbtxt", "1/model.onnx", "3/model.onnx", "2/model.onnx"]
    assert mlserver_formats.choose_model_file("m1", "onnx", files) == "3/model.onnx"


def test_every_type_has_a_class_and_file_endings() -> None:
    for model_type, fmt in mlserver_formats.FORMATS.items():
        assert fmt.model_type == model_type and fmt.implementation and fmt.suffixes
    assert mlserver_formats.IMAGE_MODEL_TYPES == ("sklearn", "xgboost", "lightgbm")


def test_the_bundled_classes_lie_in_the_folder_put_on_mlservers_path() -> None:
    for fmt in mlserver_formats.FORMATS.values():
        if fmt.bundled:
            module = fmt.implementation.rsplit(".", 1)[0]
            assert (mlserver_formats.BUNDLED_RUNTIMES_DIR / f"{module}.py").is_file()
