"""The ``meshserve`` command as a user types it, against a real node and a
real ``meshserve up``."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import psutil
import pytest
from tritonclient import grpc as triton

from mesh.edges import ports
from meshserve import samples
from tests.integration import mesh_fixtures

PREDICTOR = """\
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: {name}
spec:
  modelType:
    name: sklearn
  storage:
    path: {path}
"""


def meshserve(*args: str, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if endpoint:
        env["MESHSERVE_ENDPOINT"] = endpoint
    return subprocess.run(
        [sys.executable, "-m", "meshserve.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_predictor_apply_list_status_delete(
    mesh_node: mesh_fixtures.NodeThread, tmp_path: pathlib.Path
) -> None:
    root = mesh_node.config.node.models_root
    sample = samples.train_iris_logistic(root / "user-models" / "iris")
    f = tmp_path / "iris.yaml"
    # A path relative to the node's models root, as in a ModelMesh Predictor.
    rel = sample.folder.relative_to(root)
    f.write_text(PREDICTOR.format(name="cli-iris", path=rel))
    done = meshserve("predictor", "apply", "-f", str(f), endpoint=mesh_node.endpoint)
    assert done.returncode == 0, done.stderr
    assert "predictor/cli-iris configured" in done.stdout

    listed = meshserve("predictor", "list", "--endpoint", mesh_node.endpoint)
    assert listed.returncode == 0, listed.stderr
    assert "cli-iris" in listed.stdout and "DEFINED" in listed.stdout

    with triton.InferenceServerClient(mesh_node.endpoint) as c:
        inp = triton.InferInput("predict", list(sample.inputs.shape), "FP64")
        inp.set_data_from_numpy(sample.inputs)
        got = c.infer("cli-iris", [inp]).as_numpy("predict").reshape(-1)
    np.testing.assert_array_equal(got, sample.expected)

    status = meshserve("predictor", "status", "cli-iris", endpoint=mesh_node.endpoint)
    assert status.returncode == 0, status.stderr
    assert "activeModelState:   Loaded" in status.stdout
    assert "available:          true" in status.stdout

    models = meshserve("models", endpoint=mesh_node.endpoint)
    assert models.returncode == 0, models.stderr
    (row,) = [line for line in models.stdout.splitlines() if line.startswith("cli-iris__")]
    assert "LOADED" in row and mesh_node.config.node.instance_id in row

    nodes = meshserve("nodes", endpoint=mesh_node.endpoint)
    assert mesh_node.config.node.instance_id in nodes.stdout

    deleted = meshserve("predictor", "delete", "cli-iris", endpoint=mesh_node.endpoint)
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    again = meshserve("predictor", "status", "cli-iris", endpoint=mesh_node.endpoint)
    assert again.returncode == 1 and "not found" in again.stderr


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (PREDICTOR.replace("name: sklearn", "version: '1'"), "spec.modelType.name"),
        (PREDICTOR.replace("kind: Predictor", "kind: Pod"), "'kind'"),
        (PREDICTOR.replace("  storage:\n    path: {path}\n", ""), "spec.storage.path"),
        ("apiVersion: [unclosed", "not valid YAML"),
    ],
)
def test_a_malformed_predictor_is_refused_naming_the_field(
    mesh_node: mesh_fixtures.NodeThread, tmp_path: pathlib.Path, text: str, complaint: str
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text.format(name="bad", path="/x"))
    done = meshserve("predictor", "apply", "-f", str(f), endpoint=mesh_node.endpoint)
    assert done.returncode == 1
    assert complaint in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_endpoint_gives_one_clear_line() -> None:
    port = ports.free_port()
    done = meshserve("models", "--endpoint", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr and "Traceback" not in done.stderr


def _tree(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def test_up_runs_a_local_mesh_and_sigterm_leaves_no_process(tmp_path: pathlib.Path) -> None:
    port = ports.free_port()
    sample = samples.train_iris_logistic(tmp_path / "iris")
    up = mesh_fixtures.start_up(
        ["--grpc-port", str(port), "--data-dir", str(tmp_path / "data"), "--capacity", "512Mi"],
        tmp_path / "up.log",
    )
    try:
        children = _tree(up.process.pid)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        assert "etcd" in names and "mlserver" in names
        f = tmp_path / "p.yaml"
        f.write_text(PREDICTOR.format(name="up-iris", path=sample.folder))
        assert (
            meshserve("predictor", "apply", "-f", str(f), endpoint=f"127.0.0.1:{port}").returncode
            == 0
        )
        with triton.InferenceServerClient(f"127.0.0.1:{port}") as c:
            inp = triton.InferInput("predict", list(sample.inputs.shape), "FP64")
            inp.set_data_from_numpy(sample.inputs)
            got = c.infer("up-iris", [inp]).as_numpy("predict").reshape(-1)
        np.testing.assert_array_equal(got, sample.expected)
        nodes = meshserve("nodes", endpoint=f"127.0.0.1:{port}")
        assert "512.0 MiB" in nodes.stdout
        assert up.stop(60) == 0, up.text()
        gone = psutil.wait_procs(children, timeout=15)[1]
        assert not gone, f"left running: {gone}"
        assert "meshserve stopped." in up.text()
    finally:
        up.stop()


def test_up_keeps_registrations_across_a_restart(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    sample = samples.train_iris_logistic(tmp_path / "iris")
    f = tmp_path / "p.yaml"
    f.write_text(PREDICTOR.format(name="kept", path=sample.folder))
    for round_ in range(2):
        port = ports.free_port()
        up = mesh_fixtures.start_up(
            ["--grpc-port", str(port), "--data-dir", str(data)], tmp_path / f"up{round_}.log"
        )
        try:
            if round_ == 0:
                assert (
                    meshserve(
                        "predictor", "apply", "-f", str(f), endpoint=f"127.0.0.1:{port}"
                    ).returncode
                    == 0
                )
            else:
                listed = meshserve("predictor", "list", endpoint=f"127.0.0.1:{port}")
                assert "kept" in listed.stdout
                models = meshserve("models", endpoint=f"127.0.0.1:{port}")
                # The copy held by the stopped node is gone from the table.
                (row,) = [r for r in models.stdout.splitlines() if r.startswith("kept__")]
                assert row.split()[1] == "NOT_LOADED"
                with triton.InferenceServerClient(f"127.0.0.1:{port}") as c:
                    inp = triton.InferInput("predict", list(sample.inputs.shape), "FP64")
                    inp.set_data_from_numpy(sample.inputs)
                    got = c.infer("kept", [inp]).as_numpy("predict").reshape(-1)
                np.testing.assert_array_equal(got, sample.expected)
        finally:
            up.stop(60)


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.NoSuchProcess:
        return []


def test_up_runs_several_node_processes_and_any_node_serves_any_model(
    tmp_path: pathlib.Path,
) -> None:
    port = ports.free_ports(2)
    endpoints = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]
    sample = samples.train_iris_logistic(tmp_path / "iris")
    up = mesh_fixtures.start_up(
        ["--nodes", "2", "--grpc-port", str(port), "--data-dir", str(tmp_path / "data"),
         "--capacity", "256Mi"],
        tmp_path / "up.log",
    )  # fmt: skip
    try:
        printed = up.text()
        for endpoint in endpoints:
            assert endpoint in printed

        # Two `meshserve node` processes under `up`, each the parent of its own MLServer.
        children = _tree(up.process.pid)
        node_procs = [
            p for p in children if "meshserve.cli" in _cmdline(p) and "node" in _cmdline(p)
        ]
        runtimes = [
            p
            for p in children
            if "start" in _cmdline(p) and any(a.endswith("/mlserver") for a in _cmdline(p))
        ]
        assert len(node_procs) == 2, [p.cmdline() for p in children]
        assert len(runtimes) == 2, [p.cmdline() for p in children]
        assert {p.ppid() for p in node_procs} == {up.process.pid}
        assert sorted(p.ppid() for p in runtimes) == sorted(p.pid for p in node_procs)

        f = tmp_path / "p.yaml"
        f.write_text(PREDICTOR.format(name="multi-iris", path=sample.folder))
        applied = meshserve("predictor", "apply", "-f", str(f), endpoint=endpoints[0])
        assert applied.returncode == 0, applied.stderr

        # Either node answers (whether it holds a copy or a peer does).
        for endpoint in (*endpoints, *endpoints):
            with triton.InferenceServerClient(endpoint) as c:
                inp = triton.InferInput("predict", list(sample.inputs.shape), "FP64")
                inp.set_data_from_numpy(sample.inputs)
                got = c.infer("multi-iris", [inp], client_timeout=60).as_numpy("predict")
            np.testing.assert_array_equal(got.reshape(-1), sample.expected)

        nodes = meshserve("nodes", endpoint=endpoints[1])
        assert nodes.returncode == 0, nodes.stderr
        host = socket.gethostname()
        for p, endpoint in ((port, endpoints[0]), (port + 1, endpoints[1])):
            (row,) = [r for r in nodes.stdout.splitlines() if r.startswith(f"{host}-{p} ")]
            assert endpoint in row and "256.0 MiB" in row

        assert up.stop(90) == 0, up.text()
        left = psutil.wait_procs(children, timeout=15)[1]
        assert not left, f"left running: {left}"
        assert "meshserve stopped." in up.text()
    finally:
        up.stop()


def test_up_fails_with_the_end_of_the_log_of_a_node_that_cannot_start(
    tmp_path: pathlib.Path,
) -> None:
    env = {**os.environ, "MESHSERVE_RUNTIME_START_TIMEOUT": "soon"}  # every node refuses it
    up = subprocess.Popen(
        [sys.executable, "-m", "meshserve.cli", "up",
             *mesh_fixtures.ANY_FREE_OPS_PORTS, "--nodes", "2",
         "--grpc-port", str(ports.free_ports(2)), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        out, err = up.communicate(timeout=120)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 1, out + err
    assert "exited with status 1 before it was ready" in err
    assert "MESHSERVE_RUNTIME_START_TIMEOUT: 'soon' is not a number" in err
    assert "Traceback" not in err
    assert "meshserve is up" not in out
    left = [
        p.pid
        for p in psutil.process_iter()
        if str(tmp_path) in " ".join(_cmdline(p)) or _environ_mentions(p, str(tmp_path))
    ]
    assert not left, f"left running: {left}"


def _environ_mentions(p: psutil.Process, text: str) -> bool:
    try:
        return any(text in v for v in p.environ().values())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def test_up_serves_from_any_folder_whatever_its_folders_are_called(tmp_path: pathlib.Path) -> None:
    """Started from a folder with no ``.runtimes`` and a data folder named
    like one of meshserve's packages (``mesh``), without MESHSERVE_RUNTIMES_DIR."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "router").mkdir(parents=True)  # another package name, empty
    port = ports.free_port()
    sample = samples.train_iris_logistic(tmp_path / "iris")
    env = {k: v for k, v in os.environ.items() if k != "MESHSERVE_RUNTIMES_DIR"}
    up = mesh_fixtures.start_up(
        ["--grpc-port", str(port), "--data-dir", "mesh"], tmp_path / "up.log", env, cwd=elsewhere
    )
    try:
        f = tmp_path / "p.yaml"
        f.write_text(PREDICTOR.format(name="anywhere", path=sample.folder))
        applied = meshserve("predictor", "apply", "-f", str(f), endpoint=f"127.0.0.1:{port}")
        assert applied.returncode == 0, applied.stderr
        with triton.InferenceServerClient(f"127.0.0.1:{port}") as c:
            inp = triton.InferInput("predict", list(sample.inputs.shape), "FP64")
            inp.set_data_from_numpy(sample.inputs)
            got = c.infer("anywhere", [inp]).as_numpy("predict").reshape(-1)
        np.testing.assert_array_equal(got, sample.expected)
        assert (elsewhere / "mesh" / "logs").is_dir()  # the data folder is where it was asked
    finally:
        assert up.stop(60) == 0, up.text()
