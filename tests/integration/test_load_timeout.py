"""A load that outlasts ``MESHSERVE_LOAD_TIMEOUT``, on a real node over a
real MLServer and etcd.

Why it exists: the README promises that such a load "is cancelled and
unloaded"; the cache manager's unit tests check it against a scripted
runtime only. Here the model is a custom MLServer class whose ``load()``
never returns (:mod:`tests.integration.gated_models`), and the test checks
what a user sees: the request's status, the model's status, the runtime's
own view of the model, and a node that keeps loading other models.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator

import numpy as np
import pytest
from tritonclient import grpc as triton
from tritonclient.utils import InferenceServerException

from mesh.edges import etcd_process
from mesh.edges.proto import model_mesh_pb2 as pb2
from tests.integration import gated_models, mesh_fixtures

LOAD_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def impatient_node(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[mesh_fixtures.NodeThread]:
    """A node whose loads may take ``LOAD_TIMEOUT`` seconds."""
    n = mesh_fixtures.NodeThread(
        mesh_fixtures.node_settings(
            module_etcd.endpoint,
            tmp_path_factory.mktemp("impatient"),
            load_timeout_seconds=LOAD_TIMEOUT,
        )
    )
    n.start()
    try:
        yield n
    finally:
        n.stop()


def _runtime_knows(runtime: str, model_id: str) -> str:
    """What MLServer itself says of the model: ``ready``, ``not ready`` (it
    holds it, still loading or broken: what it says while the gated load
    waits), ``absent`` (its "not found" error), or any other error."""
    with triton.InferenceServerClient(runtime) as direct:
        try:
            return "ready" if direct.is_model_ready(model_id) else "not ready"
        except InferenceServerException as e:
            text = f"{e.status()}: {e.message()}"
            return "absent" if "not found" in text.lower() else text


def _failed_request(endpoint: str, name: str) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        mesh_fixtures.infer(endpoint, name, gated_models.free_input())
    return info.value


def test_a_load_past_the_timeout_is_cancelled_unloaded_and_recorded(
    impatient_node: mesh_fixtures.NodeThread, tmp_path: pathlib.Path
) -> None:
    hung = gated_models.write_gated_model(tmp_path, "hung", gate_load=True)
    fine = gated_models.write_gated_model(tmp_path, "fine")
    spec = mesh_fixtures.predictor_spec("hung", hung.folder)
    runtime = impatient_node.node.runtime.grpc_target
    timed_out = re.compile(rf"(longer than|within) {LOAD_TIMEOUT:g} s")
    with impatient_node.client() as mesh:
        mesh.apply(spec)
        first = _failed_request(impatient_node.endpoint, "hung")
        assert first.status() == "StatusCode.FAILED_PRECONDITION"
        assert spec.model_id in first.message() and timed_out.search(first.message())
        # The runtime's load was cancelled, and the runtime does not hold it.
        hung.wait_marks("load-cancelled")
        assert _runtime_knows(runtime, spec.model_id) == "absent"
        assert not (impatient_node.config.node.model_dir / spec.model_id).exists()
        # The record says why; the next request fails fast with that reason.
        mesh_fixtures.wait_for(
            lambda: (
                mesh.vmodel_status("hung").activeModelStatus.status
                == pb2.ModelStatusInfo.LOADING_FAILED
            ),
            30,
            "LOADING_FAILED in the model's status",
        )
        status = mesh.vmodel_status("hung").activeModelStatus
        assert any(timed_out.search(e) for e in status.errors), status.errors
        again = _failed_request(impatient_node.endpoint, "hung")
        assert again.status() == "StatusCode.FAILED_PRECONDITION"
        assert timed_out.search(again.message())
        assert hung.count("load-started") == 1
        mesh_fixtures.wait_for(
            lambda: not next(m for m in mesh.models() if m.model_id == spec.model_id).copies,
            30,
            "no copy of the model",
        )
        # The runtime is not wedged: another model loads and answers.
        mesh.apply(mesh_fixtures.predictor_spec("fine", fine.folder))
        got = mesh_fixtures.infer(impatient_node.endpoint, "fine", gated_models.free_input())
        np.testing.assert_array_equal(got, [2.0])
