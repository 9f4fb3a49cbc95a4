"""Starting tritonserver, without a server: the command line keeps Triton
on the given host with explicit model control and no memory pools, the
environment puts the wheel's libraries and the venv first, a missing install
says how to install, and the log's error lines give a failed load's reason."""

from __future__ import annotations

import pathlib

import pytest

from mesh.core import errors
from runtime_adapters.triton import launch

INSTALL = launch.Install(
    binary=pathlib.Path("/t/tritonserver/bin/tritonserver"),
    backends=pathlib.Path("/t/tritonserver/backends"),
    libraries=pathlib.Path("/t/lib/python3.11/site-packages/nvidia_pytriton.libs"),
    bin_dir=pathlib.Path("/t/bin"),
)


def test_command_line_loads_nothing_by_itself_and_listens_on_the_given_host_only() -> None:
    args = launch.server_args(INSTALL, pathlib.Path("/repo"), "127.0.0.1", 9001, None, 15)
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
    args = launch.server_args(INSTALL, pathlib.Path("/repo"), "127.0.0.1", 9001, 9000, 15)
    assert "--http-address=127.0.0.1" in args
    assert "--http-port=9000" in args
    assert "--allow-http=false" not in args


def test_command_line_turns_off_the_cuda_pool_of_every_gpu_and_passes_extra_options() -> None:
    args = launch.server_args(
        INSTALL, pathlib.Path("/repo"), "127.0.0.1", 1, None, 15, 2, ("--log-verbose=1",)
    )
    assert [a for a in args if a.startswith("--cuda-memory-pool")] == [
        "--cuda-memory-pool-byte-size=0:0",
        "--cuda-memory-pool-byte-size=1:0",
    ]
    assert args[-1] == "--log-verbose=1"


def test_environment_puts_the_wheels_libraries_and_the_venv_first() -> None:
    base = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib", "PYTHONPATH": "/mesh", "HOME": "/h"}
    env = launch.server_env(base, INSTALL)
    assert env["LD_LIBRARY_PATH"] == f"{INSTALL.libraries}:/opt/lib"
    assert env["PATH"] == "/t/bin:/usr/bin"
    assert env["VIRTUAL_ENV"] == "/t"
    assert "PYTHONPATH" not in env
    assert env["HOME"] == "/h"
    assert base["PATH"] == "/usr/bin"


def test_a_missing_install_says_how_to_install(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.RuntimeUnavailable, match="make install"):
        launch.find_install(tmp_path)


def test_reads_the_reason_for_a_model_from_tritons_error_lines() -> None:
    lines = [
        'I1125 10:05:10.156259 2065 model_lifecycle.cc:472] "loading: m1:1"',
        "E1125 10:05:11.723498 2065 model_repository_manager.cc:1460] "
        "\"Poll failed for model directory 'm1': unexpected directory name\"",
        "E1125 10:05:11.723498 2065 model_repository_manager.cc:1460] "
        "\"Poll failed for model directory 'm10': something else\"",
    ]
    assert launch.triton_log_errors("m1", lines) == [
        "Poll failed for model directory 'm1': unexpected directory name"
    ]
