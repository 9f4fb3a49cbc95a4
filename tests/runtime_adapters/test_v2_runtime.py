"""What both runtime adapters share, without a server: a model folder is
listed and sized without the runtime's config file or markers, error
messages list a few files and count the rest, config files are replaced
whole, and the gRPC target follows the endpoint or the port we picked.
(The connection, readiness and repository calls run against real MLServer
and Triton in tests/integration.)"""

from __future__ import annotations

import pathlib

import pytest

from mesh.core import errors
from runtime_adapters import v2_runtime


def test_the_runtimes_config_file_and_hidden_files_are_not_the_model() -> None:
    assert v2_runtime.is_runtime_file("config.pbtxt", "config.pbtxt")
    assert v2_runtime.is_runtime_file(".complete", "config.pbtxt")
    assert v2_runtime.is_runtime_file("1/.cache/x", "config.pbtxt")
    assert not v2_runtime.is_runtime_file("1/config.pbtxt", "config.pbtxt")
    assert not v2_runtime.is_runtime_file("model-settings.json", "config.pbtxt")


def test_sizes_a_folder_by_its_model_files_only(tmp_path: pathlib.Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "model.joblib").write_bytes(b"x" * 100)
    (tmp_path / "data" / "vocab.txt").write_bytes(b"x" * 20)
    (tmp_path / "model-settings.json").write_bytes(b"x" * 1000)
    (tmp_path / ".complete").write_bytes(b"x" * 1000)

    files = v2_runtime.list_folder(tmp_path)

    assert files == [".complete", "data/vocab.txt", "model-settings.json", "model.joblib"]
    assert v2_runtime.folder_bytes(tmp_path, files, "model-settings.json") == 120


def test_lists_ten_names_and_counts_the_rest() -> None:
    names = [f"f{i}" for i in range(12)]
    assert v2_runtime.some_names(names[:2]) == "f0, f1"
    assert v2_runtime.some_names(names).endswith("f9 and 2 more")


def test_replaces_a_file_whole_leaving_no_temporary_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text("old")
    v2_runtime.write_atomically(path, "new")
    assert path.read_text() == "new"
    assert v2_runtime.list_folder(tmp_path) == ["config.pbtxt"]


def test_target_is_the_endpoint_else_our_port_on_a_reachable_host() -> None:
    assert v2_runtime.target("triton:8001", "127.0.0.1", 0, "Triton") == "triton:8001"
    assert v2_runtime.target("", "0.0.0.0", 9001, "Triton") == "127.0.0.1:9001"
    with pytest.raises(errors.RuntimeUnavailable, match="MLServer has not been started"):
        v2_runtime.target("", "127.0.0.1", 0, "MLServer")
