"""The model folder's layout, without a server: files move into a version
folder in place, the model file gets Triton's name, a folder that cannot be
served is refused listing what is in it."""

from __future__ import annotations

import pathlib

import pytest

from mesh.core import errors
from runtime_adapters import v2_runtime
from runtime_adapters.triton import formats, layout

PYTHON = formats.FORMATS["python"]
CONFIG = 'name: "x"\nbackend: "python"\n'


def moves(planned: layout.Layout) -> dict[str, str]:
    return {m.source: m.target for m in planned.moves}


def test_moves_a_model_py_and_its_helpers_into_version_one() -> None:
    planned = layout.plan_layout("m1", PYTHON, ["model.py", "helpers.py", "data/vocab.txt"], None)
    assert moves(planned) == {
        "model.py": "1/model.py",
        "helpers.py": "1/helpers.py",
        "data": "1/data",
    }


def test_gives_a_lone_python_file_tritons_default_name() -> None:
    planned = layout.plan_layout("m1", PYTHON, ["doubler.py", "README.md"], CONFIG)
    assert moves(planned) == {"doubler.py": "1/model.py", "README.md": "1/README.md"}


def test_leaves_a_folder_with_version_folders_as_it_is() -> None:
    planned = layout.plan_layout("m1", PYTHON, ["1/model.py", "2/model.py", "notes.txt"], CONFIG)
    assert planned.moves == ()
    assert 'name: "m1"' in planned.config


def test_keeps_config_and_hidden_files_at_the_top() -> None:
    planned = layout.plan_layout("m1", PYTHON, ["config.pbtxt", ".complete", "model.py"], CONFIG)
    assert moves(planned) == {"model.py": "1/model.py"}


def test_refuses_several_python_files_without_a_model_py_naming_them() -> None:
    with pytest.raises(errors.ModelLoadFailed) as caught:
        layout.plan_layout("m1", PYTHON, ["a.py", "b.py"], None)
    assert caught.value.model_id == "m1"
    assert "a.py, b.py" in caught.value.reason
    assert "default_model_filename" in caught.value.reason


def test_refuses_a_folder_without_a_model_file_listing_what_is_there() -> None:
    with pytest.raises(errors.ModelLoadFailed, match=r"\*\.py.*notes.txt"):
        layout.plan_layout("m1", PYTHON, ["notes.txt"], None)


def test_refuses_an_empty_folder() -> None:
    with pytest.raises(errors.ModelLoadFailed, match="empty"):
        layout.plan_layout("m1", PYTHON, ["config.pbtxt", ".complete"], CONFIG)


def test_follows_the_users_default_model_filename() -> None:
    user = CONFIG + 'default_model_filename: "serve.py"\n'
    planned = layout.plan_layout("m1", PYTHON, ["serve.py", "other.py"], user)
    assert moves(planned) == {"serve.py": "1/serve.py", "other.py": "1/other.py"}


def test_refuses_a_default_model_filename_that_is_not_there() -> None:
    user = CONFIG + 'default_model_filename: "serve.py"\n'
    with pytest.raises(errors.ModelLoadFailed, match=r"'serve\.py', which is not in the folder"):
        layout.plan_layout("m1", PYTHON, ["model.py"], user)


def test_puts_a_savedmodel_folder_under_tritons_folder_name() -> None:
    files = ["saved_model.pb", "variables/variables.index"]
    planned = layout.plan_layout("m1", formats.FORMATS["tensorflow"], files, None)
    assert moves(planned) == {
        "saved_model.pb": "1/model.savedmodel/saved_model.pb",
        "variables": "1/model.savedmodel/variables",
    }


def test_renames_a_lone_onnx_file() -> None:
    planned = layout.plan_layout("m1", formats.FORMATS["onnx"], ["resnet.onnx"], None)
    assert moves(planned) == {"resnet.onnx": "1/model.onnx"}


def test_lays_out_a_folder_on_disk_once(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "m1"
    folder.mkdir()
    (folder / "doubler.py").write_text("x" * 300)
    (folder / "config.pbtxt").write_text('name: "double"\nbackend: "python"\n')
    (folder / ".complete").write_text("")

    disk = layout.prepare_model_folder("m1", PYTHON, folder)
    again = layout.prepare_model_folder("m1", PYTHON, folder)

    assert disk == again == 300
    assert v2_runtime.list_folder(folder) == [".complete", "1/model.py", "config.pbtxt"]
    assert (folder / "config.pbtxt").read_text() == 'name: "m1"\nbackend: "python"\n'


def test_refuses_a_missing_folder(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ModelLoadFailed, match="does not exist"):
        layout.prepare_model_folder("m1", PYTHON, tmp_path / "nope")


def test_a_malformed_user_config_fails_the_load_naming_the_file() -> None:
    with pytest.raises(errors.ModelLoadFailed, match=r"config.pbtxt is malformed: .*never closed"):
        layout.plan_layout("m1", PYTHON, ["model.py"], "input [")
