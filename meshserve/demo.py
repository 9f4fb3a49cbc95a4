"""``meshserve demo``: a local mesh serving real models, end to end.

What a new user runs first (``make demo``). It does, in order, what a user
would do by hand:

1. start ``meshserve up`` as a child process (etcd, a node, MLServer);
2. train three small scikit-learn models and save them to a folder;
3. register each as a KServe ModelMesh ``Predictor`` (the YAML is written
   next to the models, and applied as ``meshserve predictor apply`` does);
4. call each model with ``tritonclient.grpc`` through the mesh's one
   endpoint, and print the answers next to scikit-learn's own;
5. print the Predictors and the placement table;
6. stop the mesh with SIGTERM and check that nothing was left running.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil
import yaml
from tritonclient import grpc as triton

from kube import mesh_client
from mesh.core import errors
from mesh.edges import ports, processes
from meshserve import client, samples

INPUT_NAME = "predict"
OUTPUT_NAME = "predict"


def _wait_ready(url: str, up: processes.ChildProcess, timeout: float) -> float:
    t0 = time.monotonic()
    c = triton.InferenceServerClient(url)
    try:
        while time.monotonic() - t0 < timeout:
            if not up.running():
                raise errors.RuntimeUnavailable(
                    f"meshserve up exited with {up.returncode()}; its log ends:\n{up.log_tail()}"
                )
            try:
                if c.is_server_ready(client_timeout=1.0):
                    return time.monotonic() - t0
            except Exception:
                pass
            time.sleep(0.1)
    finally:
        c.close()
    raise errors.RuntimeUnavailable(
        f"the mesh was not ready within {timeout:.0f} s; log ends:\n{up.log_tail()}"
    )


def _predictor_yaml(name: str, sample: samples.Sample) -> str:
    doc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "Predictor",
        "metadata": {"name": name},
        "spec": {"modelType": {"name": sample.model_type}, "storage": {"path": str(sample.folder)}},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _infer(c: triton.InferenceServerClient, name: str, x: np.ndarray) -> np.ndarray:
    inp = triton.InferInput(INPUT_NAME, list(x.shape), "FP64")
    inp.set_data_from_numpy(x.astype(np.float64))
    result = c.infer(name, [inp], outputs=[triton.InferRequestedOutput(OUTPUT_NAME)])
    out: np.ndarray = result.as_numpy(OUTPUT_NAME).reshape(-1)
    return out


def run(grpc_port: int, data_dir: pathlib.Path) -> int:
    data_dir = data_dir.resolve()
    _clear_previous_run(data_dir)
    endpoint = f"127.0.0.1:{grpc_port}"
    if ports.port_open("127.0.0.1", grpc_port):
        print(f"port {grpc_port} is taken; pass --grpc-port", file=sys.stderr)
        return 1
    up = _start_mesh(grpc_port, data_dir)
    try:
        took = _wait_ready(endpoint, up, 120)
        print(f"   ready in {took:.1f} s (etcd + node + MLServer); log: {up.log_path}")
        trained = _train_models(data_dir / "model-store")
        with mesh_client.MeshClient(endpoint) as mc:
            _register_predictors(mc, trained, data_dir / "predictors")
            ok = _call_each_model(endpoint, trained)
            _print_tables(mc)
    finally:
        _stop_mesh(up)
    if not ok:
        print("demo FAILED: an answer differs from scikit-learn's", file=sys.stderr)
        return 1
    print("demo OK")
    return 0


def _clear_previous_run(data_dir: pathlib.Path) -> None:
    for sub in ("models", "model-store", "predictors"):
        shutil.rmtree(data_dir / sub, ignore_errors=True)
    shutil.rmtree(data_dir / "etcd", ignore_errors=True)  # a fresh table each demo


def _start_mesh(grpc_port: int, data_dir: pathlib.Path) -> processes.ChildProcess:
    """Step 1: ``meshserve up`` as a child process."""
    print(
        f"== 1. starting a local mesh: meshserve up --grpc-port {grpc_port} --data-dir {data_dir}"
    )
    up = processes.ChildProcess(
        "meshserve up",
        [
            sys.executable,
            "-P",  # the working directory's folders must not shadow meshserve's packages
            "-m",
            "meshserve.cli",
            "up",
            "--grpc-port",
            str(grpc_port),
            # The demo talks gRPC only: REST, metrics and probes take any free port.
            *("--rest-port", "0", "--metrics-port", "0", "--probe-port", "0"),
            "--data-dir",
            str(data_dir),
        ],
        data_dir / "logs" / "up.log",
    )
    up.start()
    return up


def _train_models(store: pathlib.Path) -> dict[str, samples.Sample]:
    """Step 2: three scikit-learn models, saved under ``store``."""
    print("== 2. training three scikit-learn models")
    trained = {
        "iris-logistic": samples.train_iris_logistic(store / "iris-logistic"),
        "wine-forest": samples.train_wine_forest(store / "wine-forest"),
        "diabetes-ridge": samples.train_diabetes_ridge(store / "diabetes-ridge"),
    }
    for name, s in trained.items():
        print(f"   {name}: {s.model_file}")
    return trained


def _register_predictors(
    mc: mesh_client.MeshClient, trained: dict[str, samples.Sample], folder: pathlib.Path
) -> None:
    """Step 3: each model as a Predictor, its YAML written to ``folder``."""
    print("== 3. registering them as Predictors (meshserve predictor apply -f ...)")
    for name, s in trained.items():
        path = folder / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_predictor_yaml(name, s))
        for spec in client.load_predictors(path.read_text()):
            mc.apply(spec)
            print(f"   predictor/{spec.name} configured (model {spec.model_id})")


def _call_each_model(endpoint: str, trained: dict[str, samples.Sample]) -> bool:
    """Step 4: call each model twice through the mesh; whether every answer
    matches scikit-learn's."""
    print("== 4. inference through the mesh with tritonclient.grpc at " + endpoint)
    tc = triton.InferenceServerClient(endpoint)
    ok = True
    try:
        for name, s in trained.items():
            ok &= _call_model(tc, name, s)
    finally:
        tc.close()
    return ok


def _call_model(tc: triton.InferenceServerClient, name: str, s: samples.Sample) -> bool:
    t0 = time.perf_counter()
    got = _infer(tc, name, s.inputs)
    cold = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    _infer(tc, name, s.inputs)
    warm = (time.perf_counter() - t0) * 1000
    same = np.allclose(got.astype(np.float64), s.expected.astype(np.float64))
    print(
        f"   {name}: first call {cold:.0f} ms (loads the model), "
        f"next {warm:.1f} ms — {'matches' if same else 'DIFFERS FROM'} "
        "scikit-learn"
    )
    for row, mesh_y, sk_y in zip(s.inputs[:3], got[:3], s.expected[:3], strict=True):
        print(
            f"     x={np.round(row[:4], 2).tolist()}...  mesh={_fmt(mesh_y)}  sklearn={_fmt(sk_y)}"
        )
    return bool(same)


def _print_tables(mc: mesh_client.MeshClient) -> None:
    """Step 5: the Predictors and the placement table."""
    print("== 5. the Predictors and the placement table")
    print(_indent(client.vmodels_table(mc.vmodels())))
    print()
    models = mc.models()
    print(_indent(client.models_table(models)))
    print()
    print(_indent(client.nodes_table(_instances_counting(mc, models))))


def _instances_counting(
    mc: mesh_client.MeshClient, models: Sequence[Any], wait_s: float = 5.0
) -> Sequence[Any]:
    """The nodes' records once they count every copy in ``models``: a node
    republishes its record some tens of ms after a load, and step 4's last
    load has only just ended (up to ``wait_s``; then as they are)."""
    copies = sum(len(m.copies) for m in models)
    deadline = time.monotonic() + wait_s
    while True:
        instances = mc.instances()
        if sum(i.model_count for i in instances) >= copies or time.monotonic() > deadline:
            return instances
        time.sleep(0.02)


def _stop_mesh(up: processes.ChildProcess) -> None:
    """Step 6: SIGTERM, then check that no process of the mesh is left."""
    print("== 6. stopping the mesh (SIGTERM)")
    group = _group_members(up.pid)
    t0 = time.monotonic()
    up.stop(timeout=30)
    left = [p for p in group if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    print(
        f"   stopped in {time.monotonic() - t0:.1f} s; "
        f"{'no process left behind' if not left else f'LEFT RUNNING: {left}'}"
    )


def _group_members(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _fmt(v: object) -> str:
    return f"{float(v):.3f}" if isinstance(v, np.floating | float) else str(v)


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())
