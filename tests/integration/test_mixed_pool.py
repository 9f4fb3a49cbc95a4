"""A mixed pool: one MLServer node and one Triton node in one mesh.

Each model goes to a node whose runtime serves its type (labels ``mt:<type>``);
any node answers for any model; a model no node can serve fails with a
message saying so.
"""

from __future__ import annotations

import pathlib

import grpc
import numpy as np
import pytest
from tritonclient import grpc as triton
from tritonclient.utils import InferenceServerException

from kube import mesh_client
from mesh.edges import health_grpc, ports
from meshserve import samples
from tests.integration import mesh_fixtures, triton_fixtures


def _holder(c: mesh_client.MeshClient, model_id: str) -> list[str]:
    return [x.instance for m in c.models() if m.model_id == model_id for x in m.copies]


def _index(tc: triton.InferenceServerClient) -> dict[str, str]:
    return {m.name: m.state for m in tc.get_model_repository_index().models}


def _triton_clients_calls_answer_for_both_runtimes(endpoint: str) -> None:
    """tritonclient's statistics, repository and health calls through either
    node of ``meshserve up``, for the MLServer model and the Triton one:
    each was inferred once through each node."""
    with triton.InferenceServerClient(endpoint) as tc:
        assert tc.is_server_live() and tc.is_server_ready()
        for name in ("iris", "double"):
            (stats,) = tc.get_inference_statistics(name).model_stats
            assert (stats.name, stats.inference_count) == (name, 2), stats
            assert tc.is_model_ready(name)
        mesh_fixtures.wait_for(lambda: _index(tc).get("double") == "READY")
        tc.unload_model("double")
        mesh_fixtures.wait_for(lambda: _index(tc).get("double") == "UNAVAILABLE")
        tc.load_model("double")
        mesh_fixtures.wait_for(lambda: _index(tc).get("double") == "READY")
    with grpc.insecure_channel(endpoint) as channel:  # grpc.health.v1, as probes ask
        answer = channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=30)
    assert answer == b"\x08" + bytes([health_grpc.SERVING])


def test_each_model_lands_on_a_node_whose_runtime_serves_its_type(
    tmp_path: pathlib.Path, triton_venv: pathlib.Path
) -> None:
    port = ports.free_ports(2)
    endpoints = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]
    up = mesh_fixtures.start_up(
        ["--runtime", "mlserver=1,triton=1", "--grpc-port", str(port),
         "--data-dir", str(tmp_path / "data")],
        tmp_path / "up.log",
    )  # fmt: skip
    try:
        iris = samples.train_iris_logistic(tmp_path / "iris")
        double = triton_fixtures.write_double_sample(tmp_path / "double")
        with mesh_client.MeshClient(endpoints[0]) as c:
            runtimes = {i.instance_id: set(i.labels) for i in c.instances()}
            c.apply(mesh_fixtures.predictor_spec("iris", iris.folder))
            c.apply(mesh_fixtures.predictor_spec("double", double.folder, "python"))
            # Served by NVIDIA's Triton image only, not the wheel's Triton.
            c.apply(mesh_fixtures.predictor_spec("tf-model", iris.folder, "tensorflow"))
            for endpoint in endpoints:
                np.testing.assert_array_equal(
                    mesh_fixtures.infer(endpoint, "iris", iris.inputs), iris.expected
                )
                with triton.InferenceServerClient(endpoint) as tc:
                    x = double.inputs["INPUT0"]
                    inp = triton.InferInput("INPUT0", list(x.shape), "FP32")
                    inp.set_data_from_numpy(x)
                    got = tc.infer("double", [inp], client_timeout=60).as_numpy("OUTPUT0")
                np.testing.assert_array_equal(got, double.expected["OUTPUT0"])
            (iris_node,) = _holder(c, c.vmodel_status("iris").activeModelId)
            (double_node,) = _holder(c, c.vmodel_status("double").activeModelId)
        assert "rt:mlserver" in runtimes[iris_node] and "mt:sklearn" in runtimes[iris_node]
        assert "rt:triton" in runtimes[double_node] and "mt:python" in runtimes[double_node]
        with pytest.raises(InferenceServerException) as info:
            mesh_fixtures.infer(endpoints[1], "tf-model", iris.inputs)
        assert "mt:tensorflow" in info.value.message()
        assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
        for endpoint in endpoints:
            _triton_clients_calls_answer_for_both_runtimes(endpoint)
    finally:
        assert up.stop(90) == 0, up.text()
