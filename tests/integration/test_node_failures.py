"""Nodes killed with SIGKILL under a steady stream of requests.

The mesh runs as production runs it: ``meshserve up --nodes 3``, three
``meshserve node`` processes, each with its own MLServer, one etcd. A client
sends requests every few milliseconds through a node that survives while
another is killed.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import psutil
import pytest
from tritonclient import grpc as triton
from tritonclient.utils import InferenceServerException

from kube import mesh_client
from mesh.edges.proto import model_mesh_pb2 as pb2
from meshserve import samples
from tests.integration import mesh_fixtures

DEADLINE = 10.0


@dataclasses.dataclass
class Mesh:
    pids: dict[str, int]
    """Instance id → node process id."""
    endpoint_of: dict[str, str]
    """Instance id → the node's endpoint."""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("up")
    port = mesh_fixtures.free_ports(3)
    env = dict(os.environ, MESHSERVE_LEASE_TTL="3", MESHSERVE_DEAD_NODE_GRACE="1",
               MESHSERVE_JANITOR_INTERVAL="0.5", MESHSERVE_SCALE_INTERVAL="0.5")  # fmt: skip
    up = mesh_fixtures.start_up(
        ["--nodes", "3", "--grpc-port", str(port), "--data-dir", str(tmp / "data")],
        tmp / "up.log",
        env,
    )
    try:
        pids, endpoint_of = {}, {}
        for child in psutil.Process(up.process.pid).children():
            if "node" in child.cmdline():
                env = child.environ()
                pids[env["MM_INSTANCE_ID"]] = child.pid
                endpoint_of[env["MM_INSTANCE_ID"]] = f"127.0.0.1:{env['MM_SVC_GRPC_PORT']}"
        assert len(pids) == 3
        yield Mesh(pids, endpoint_of)
    finally:
        up.stop(60)


@dataclasses.dataclass
class Outcome:
    start: float
    end: float
    error: str = ""


def _stream(
    endpoint: str, name: str, sample: samples.Sample, stop: threading.Event
) -> list[Outcome]:
    """Send one request every 10 ms until ``stop``; each with a deadline."""
    out: list[Outcome] = []
    with triton.InferenceServerClient(endpoint) as c:
        inp = triton.InferInput("predict", list(sample.inputs.shape), "FP64")
        inp.set_data_from_numpy(sample.inputs)
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                got = c.infer(name, [inp], client_timeout=DEADLINE).as_numpy("predict")
                np.testing.assert_array_equal(got.reshape(-1), sample.expected)
                out.append(Outcome(t0, time.monotonic()))
            except (InferenceServerException, AssertionError) as e:
                out.append(Outcome(t0, time.monotonic(), str(e)))
            time.sleep(0.01)
    return out


def _holders(c: mesh_client.MeshClient, model_id: str, state: str = "LOADED") -> list[str]:
    for m in c.models():
        if m.model_id == model_id:
            return [x.instance for x in m.copies if x.state == state]
    return []


def _run_stream_and_kill(
    mesh: Mesh, entry: str, name: str, sample: samples.Sample, victim: str
) -> tuple[list[Outcome], float]:
    stop = threading.Event()
    result: list[list[Outcome]] = []
    t = threading.Thread(target=lambda: result.append(_stream(entry, name, sample, stop)))
    t.start()
    time.sleep(1.5)
    killed_at = time.monotonic()
    os.kill(mesh.pids[victim], signal.SIGKILL)
    time.sleep(6)
    stop.set()
    t.join(DEADLINE + 5)
    return result[0], killed_at


def test_killing_a_node_with_one_of_two_copies_fails_no_request(
    mesh: Mesh, tmp_path: pathlib.Path
) -> None:
    sample = samples.train_iris_logistic(tmp_path / "iris")
    with mesh_client.MeshClient(next(iter(mesh.endpoint_of.values()))) as c:
        c.mesh.registerModel(
            pb2.RegisterModelRequest(
                modelId="twice", modelInfo=pb2.ModelInfo(type="sklearn", path=str(sample.folder)),
                minCopies=2,
            )
        )  # fmt: skip
        mesh_fixtures.wait_for(lambda: len(_holders(c, "twice")) == 2, 30, "two copies")
        holders = _holders(c, "twice")
    entry = next(mesh.endpoint_of[i] for i in mesh.pids if i not in holders)
    outcomes, _ = _run_stream_and_kill(mesh, entry, "twice", sample, holders[0])
    failed = [o for o in outcomes if o.error]
    assert len(outcomes) > 100
    assert not failed, failed[:3]
    mesh.pids.pop(holders[0])


def test_killing_the_node_with_the_only_copy_recovers_within_the_deadline(
    mesh: Mesh, tmp_path: pathlib.Path
) -> None:
    sample = samples.train_wine_forest(tmp_path / "wine")
    live = sorted(mesh.pids)
    with mesh_client.MeshClient(mesh.endpoint_of[live[0]]) as c:
        c.mesh.registerModel(
            pb2.RegisterModelRequest(
                modelId="once", modelInfo=pb2.ModelInfo(type="sklearn", path=str(sample.folder)),
                loadNow=True, sync=True,
            )
        )  # fmt: skip
        (holder,) = _holders(c, "once")
    entry = mesh.endpoint_of[next(i for i in live if i != holder)]
    outcomes, killed_at = _run_stream_and_kill(mesh, entry, "once", sample, holder)
    assert all(o.end - o.start <= DEADLINE + 1 for o in outcomes)  # none hangs
    after = [o for o in outcomes if o.start > killed_at and not o.error]
    assert after, "the model was never served again after its node was killed"
    back_in = after[0].end - killed_at
    print(f"served again {back_in:.2f} s after the only copy's node was killed")
    assert back_in < DEADLINE
    with mesh_client.MeshClient(entry) as c:
        assert holder not in _holders(c, "once")
