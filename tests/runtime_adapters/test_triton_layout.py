"""The Triton adapter's folder layout, type table and process set-up, without
a server: files move into a version folder in place, the model file gets
Triton's name, types name the backend they need, and the command line keeps
Triton on 127.0.0.1 with explicit model control."""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib

import pytest

from mesh.core import errors, interfaces
from runtime_adapters import memory, triton

PYTHON = triton.FORMATS["python"]
CONFIG = 'name: "x"\nbackend: "python"\n'


def moves(layout: triton.Layout) -> dict[str, str]:
    return {m.source: m.target for m in layout.moves}


# -- the layout -------------------------------------------------------------------


def test_moves_a_model_py_and_its_helpers_into_version_one() -> None:
    layout = triton.plan_layout("m1", PYTHON, ["model.py", "helpers.py", "data/vocab.txt"], None)
    assert moves(layout) == {
        "model.py": "1/model.py",
        "helpers.py": "1/helpers.py",
        "data": "1/data",
    }


def test_gives_a_lone_python_file_tritons_default_name() -> None:
    layout = triton.plan_layout("m1", PYTHON, ["doubler.py", "README.md"], CONFIG)
    assert moves(layout) == {"doubler.py": "1/model.py", "README.md": "1/README.md"}


def test_leaves_a_folder_with_version_folders_as_it_is() -> None:
    layout = triton.plan_layout("m1", PYTHON, ["1/model.py", "2/model.py", "notes.txt"], CONFIG)
    assert layout.moves == ()
    assert 'name: "m1"' in layout.config


def test_keeps_config_and_hidden_files_at_the_top() -> None:
    layout = triton.plan_layout("m1", PYTHON, ["config.pbtxt", ".complete", "model.py"], CONFIG)
    assert moves(layout) == {"model.py": "1/model.py"}


def test_refuses_several_python_files_without_a_model_py_naming_them() -> None:
    with pytest.raises(errors.ModelLoadFailed) as caught:
        triton.plan_layout("m1", PYTHON, ["a.py", "b.py"], None)
    assert caught.value.model_id == "m1"
    assert "a.py, b.py" in caught.value.reason
    assert "default_model_filename" in caught.value.reason


def test_refuses_a_folder_without_a_model_file_listing_what_is_there() -> None:
    with pytest.raises(errors.ModelLoadFailed, match=r"\*\.py.*notes.txt"):
        triton.plan_layout("m1", PYTHON, ["notes.txt"], None)


def test_refuses_an_empty_folder() -> None:
    with pytest.raises(errors.ModelLoadFailed, match="empty"):
        triton.plan_layout("m1", PYTHON, ["config.pbtxt", ".complete"], CONFIG)


def test_follows_the_users_default_model_filename() -> None:
    user = CONFIG + 'default_model_filename: "serve.py"\n'
    layout = triton.plan_layout("m1", PYTHON, ["serve.py", "other.py"], user)
    assert moves(layout) == {"serve.py": "1/serve.py", "other.py": "1/other.py"}


def test_refuses_a_default_model_filename_that_is_not_there() -> None:
    user = CONFIG + 'default_model_filename: "serve.py"\n'
    with pytest.raises(errors.ModelLoadFailed, match=r"'serve\.py', which is not in the folder"):
        triton.plan_layout("m1", PYTHON, ["model.py"], user)


def test_puts_a_savedmodel_folder_under_tritons_folder_name() -> None:
    files = ["saved_model.pb", "variables/variables.index"]
    layout = triton.plan_layout("m1", triton.FORMATS["tensorflow"], files, None)
    assert moves(layout) == {
        "saved_model.pb": "1/model.savedmodel/saved_model.pb",
        "variables": "1/model.savedmodel/variables",
    }


def test_renames_a_lone_onnx_file() -> None:
    layout = triton.plan_layout("m1", triton.FORMATS["onnx"], ["resnet.onnx"], None)
    assert moves(layout) == {"resnet.onnx": "1/model.onnx"}


def test_lays_out_a_folder_on_disk_once(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "m1"
    folder.mkdir()
    (folder / "doubler.py").write_text("x" * 300)
    (folder / "config.pbtxt").write_text('name: "double"\nbackend: "python"\n')
    (folder / ".complete").write_text("")

    disk = triton.prepare_model_folder("m1", PYTHON, folder)
    again = triton.prepare_model_folder("m1", PYTHON, folder)

    assert disk == again == 300
    assert triton.list_folder(folder) == [".complete", "1/model.py", "config.pbtxt"]
    assert (folder / "config.pbtxt").read_text() == 'name: "m1"\nbackend: "python"\n'


def test_refuses_a_missing_folder(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ModelLoadFailed, match="does not exist"):
        triton.prepare_model_folder("m1", PYTHON, tmp_path / "nope")


# -- the type table -------------------------------------------------------------------


def test_the_wheels_triton_serves_python_models_only() -> None:
    assert triton.WHEEL_MODEL_TYPES == ("python",)
    assert triton.TritonConfig(model_dir=pathlib.Path("m")).model_types == ("python",)


def test_every_format_names_its_backend_or_platform_and_its_file() -> None:
    for model_type, fmt in triton.FORMATS.items():
        assert fmt.model_type == model_type
        assert bool(fmt.backend) != bool(fmt.platform)
        assert fmt.default_file
        assert fmt.suffixes


def test_a_type_this_triton_lacks_a_backend_for_names_the_backend_and_the_served_types() -> None:
    with pytest.raises(errors.ModelLoadFailed) as caught:
        triton.format_for("m1", "onnx", ("python",))
    assert "onnxruntime backend" in caught.value.reason
    assert "supported: python" in caught.value.reason


def test_an_unknown_type_names_the_served_types() -> None:
    with pytest.raises(errors.ModelLoadFailed, match=r"'sklearn' is not supported.*python, onnx"):
        triton.format_for("m1", "sklearn", ("python", "onnx"))


def test_a_triton_with_more_backends_serves_more_types() -> None:
    assert triton.format_for("m1", "onnx", ("python", "onnx")).backend == "onnxruntime"


def test_config_refuses_unknown_model_types_and_memory_pools() -> None:
    with pytest.raises(errors.ConfigError, match="unknown"):
        triton.TritonConfig(model_dir=pathlib.Path("m"), model_types=("python", "jax"))
    with pytest.raises(errors.ConfigError, match="memory_pool"):
        triton.TritonConfig(model_dir=pathlib.Path("m"), memory_pool="disk")


# -- the process --------------------------------------------------------------------------


INSTALL = triton.Install(
    binary=pathlib.Path("/t/tritonserver/bin/tritonserver"),
    backends=pathlib.Path("/t/tritonserver/backends"),
    libraries=pathlib.Path("/t/lib/python3.11/site-packages/nvidia_pytriton.libs"),
    bin_dir=pathlib.Path("/t/bin"),
)


def test_command_line_loads_nothing_by_itself_and_listens_on_the_given_host_only() -> None:
    args = triton.server_args(INSTALL, pathlib.Path("/repo"), "127.0.0.1", 9001, None, 15)
    assert args[0] == "/t/tritonserver/bin/tritonserver"
    assert "--model-repository=/repo" in args
    assert "--model-control-mode=explicit" in args
    assert "--backend-directory=/t/tritonserver/backends" in args
    assert "--grpc-address=127.0.0.1" in args
    assert "--grpc-port=9001" in args
    assert "--allow-http=false" in args
    assert "--allow-metrics=false" in args
    assert "--strict-readiness=false" in args
    assert "--pinned-memory-pool-byte-size=0" in args
    assert "--cuda-memory-pool-byte-size=0:0" in args
    assert "--exit-timeout-secs=15" in args


def test_command_line_opens_http_on_the_same_host_when_given_a_port() -> None:
    args = triton.server_args(INSTALL, pathlib.Path("/repo"), "127.0.0.1", 9001, 9000, 15)
    assert "--http-address=127.0.0.1" in args
    assert "--http-port=9000" in args
    assert "--allow-http=false" not in args


def test_command_line_turns_off_the_cuda_pool_of_every_gpu_and_passes_extra_options() -> None:
    args = triton.server_args(
        INSTALL, pathlib.Path("/repo"), "127.0.0.1", 1, None, 15, 2, ("--log-verbose=1",)
    )
    assert [a for a in args if a.startswith("--cuda-memory-pool")] == [
        "--cuda-memory-pool-byte-size=0:0",
        "--cuda-memory-pool-byte-size=1:0",
    ]
    assert args[-1] == "--log-verbose=1"


def test_environment_puts_the_wheels_libraries_and_the_venv_first() -> None:
    base = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib", "PYTHONPATH": "/mesh", "HOME": "/h"}
    env = triton.server_env(base, INSTALL)
    assert env["LD_LIBRARY_PATH"] == f"{INSTALL.libraries}:/opt/lib"
    assert env["PATH"] == "/t/bin:/usr/bin"
    assert env["VIRTUAL_ENV"] == "/t"
    assert "PYTHONPATH" not in env
    assert env["HOME"] == "/h"
    assert base["PATH"] == "/usr/bin"


def test_a_missing_install_says_how_to_install(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.RuntimeUnavailable, match="make install"):
        triton.find_install(tmp_path)


# -- the adapter without a server -------------------------------------------------------


def test_is_a_runtime_adapter_for_python_models(tmp_path: pathlib.Path) -> None:
    config = triton.TritonConfig(model_dir=tmp_path, venv=tmp_path)
    adapter: interfaces.RuntimeAdapter = triton.TritonAdapter(config)  # checked by mypy
    assert adapter.name == "triton"
    assert adapter.supported_model_types() == ("python",)


def test_grpc_target_is_the_endpoint_when_one_is_given(tmp_path: pathlib.Path) -> None:
    config = triton.TritonConfig(model_dir=tmp_path, endpoint="triton:8001")
    assert triton.TritonAdapter(config).grpc_target == "triton:8001"


def test_grpc_target_before_start_with_no_port_is_unavailable(tmp_path: pathlib.Path) -> None:
    adapter = triton.TritonAdapter(triton.TritonConfig(model_dir=tmp_path))
    with pytest.raises(errors.RuntimeUnavailable, match="not been started"):
        _ = adapter.grpc_target


async def test_start_without_triton_installed_says_how_to_install(tmp_path: pathlib.Path) -> None:
    adapter = triton.TritonAdapter(triton.TritonConfig(model_dir=tmp_path, venv=tmp_path))
    with pytest.raises(errors.RuntimeUnavailable, match="make install"):
        await adapter.start()


async def test_counts_host_memory_for_python_models_even_beside_a_gpu(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "has_gpu", lambda: True)
    config = triton.TritonConfig(
        model_dir=tmp_path, endpoint="127.0.0.1:1", start_timeout_seconds=0.1
    )
    python_only = triton.TritonAdapter(config)
    with contextlib.suppress(errors.RuntimeUnavailable):
        await python_only.start()  # nothing listens there: only the pool choice matters
    assert python_only.counts_gpu_memory is False


async def test_counts_gpu_memory_for_gpu_formats_beside_a_gpu(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "has_gpu", lambda: True)
    config = triton.TritonConfig(
        model_dir=tmp_path,
        endpoint="127.0.0.1:1",
        model_types=("python", "onnx"),
        start_timeout_seconds=0.1,
    )
    adapter = triton.TritonAdapter(config)
    with contextlib.suppress(errors.RuntimeUnavailable):
        await adapter.start()
    assert adapter.counts_gpu_memory is True
    host = triton.TritonAdapter(dataclasses.replace(config, memory_pool="host"))
    assert host.counts_gpu_memory is False


async def test_not_ready_before_start(tmp_path: pathlib.Path) -> None:
    adapter = triton.TritonAdapter(triton.TritonConfig(model_dir=tmp_path, grpc_port=1))
    assert await adapter.ready() is False


async def test_a_type_it_does_not_serve_fails_before_touching_the_folder(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "m1").mkdir()
    (tmp_path / "m1" / "model.onnx").write_bytes(b"x")
    adapter = triton.TritonAdapter(triton.TritonConfig(model_dir=tmp_path))
    with pytest.raises(errors.ModelLoadFailed, match="onnxruntime"):
        await adapter.load("m1", "onnx", tmp_path / "m1")
    assert triton.list_folder(tmp_path / "m1") == ["model.onnx"]
