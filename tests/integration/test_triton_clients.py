"""tritonclient's example-client calls against a mesh of Triton: an unknown
version is NOT_FOUND and leaves the model loaded, statistics count the
inferences, the repository index, load and unload, health and metadata
(real etcd and tritonserver with the Python backend)."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator

import numpy as np
import pytest
from tritonclient import grpc as triton
from tritonclient.utils import InferenceServerException

from mesh.edges import etcd_process
from tests.integration import mesh_fixtures, triton_fixtures


@pytest.fixture(scope="module")
def triton_node(
    module_etcd: etcd_process.EtcdServer,
    tmp_path_factory: pytest.TempPathFactory,
    triton_venv: pathlib.Path,
) -> Iterator[mesh_fixtures.NodeThread]:
    config = mesh_fixtures.node_settings(
        module_etcd.endpoint, tmp_path_factory.mktemp("triton-clients")
    )
    config = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime, kind="triton"))
    node = mesh_fixtures.NodeThread(config)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def double(
    triton_node: mesh_fixtures.NodeThread, tmp_path_factory: pytest.TempPathFactory
) -> triton_fixtures.TritonSample:
    sample = triton_fixtures.write_double_sample(tmp_path_factory.mktemp("double") / "double")
    with triton_node.client() as c:
        c.apply(mesh_fixtures.predictor_spec("double-t", sample.folder, "python"))
    return sample


def _infer(endpoint: str, sample: triton_fixtures.TritonSample, version: str = "") -> np.ndarray:
    with triton.InferenceServerClient(endpoint) as c:
        x = sample.inputs["INPUT0"]
        inp = triton.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got: np.ndarray = c.infer(
            "double-t", [inp], model_version=version, client_timeout=120
        ).as_numpy("OUTPUT0")
    return got


def _state(c: triton.InferenceServerClient) -> str:
    """The index's state of the model (from the node's mirror: it follows)."""
    (entry,) = [m for m in c.get_model_repository_index().models if m.name == "double-t"]
    return str(entry.state)


def test_triton_clients_calls_work_through_the_mesh(
    triton_node: mesh_fixtures.NodeThread, double: triton_fixtures.TritonSample
) -> None:
    np.testing.assert_array_equal(_infer(triton_node.endpoint, double), double.expected["OUTPUT0"])
    np.testing.assert_array_equal(
        _infer(triton_node.endpoint, double, "1"), double.expected["OUTPUT0"]
    )
    loads = triton_node.node.metrics.registry.get_sample_value(
        "modelmesh_loadmodel_milliseconds_count"
    )
    with pytest.raises(InferenceServerException) as info:
        _infer(triton_node.endpoint, double, "99")
    assert info.value.status() == "StatusCode.NOT_FOUND", info.value.message()
    assert "version 99 is not found" in (info.value.message() or "")
    with triton.InferenceServerClient(triton_node.endpoint) as c:
        (stats,) = c.get_inference_statistics("double-t").model_stats
        assert stats.inference_count == 2 and stats.name == "double-t"
        mesh_fixtures.wait_for(lambda: _state(c) == "READY")
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("double-t")
        assert "statistics" in c.get_server_metadata().extensions
        c.unload_model("double-t")
        mesh_fixtures.wait_for(lambda: _state(c) == "UNAVAILABLE")
    registry = triton_node.node.metrics.registry
    assert registry.get_sample_value("modelmesh_loadmodel_milliseconds_count") == loads


UPPER_MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        config.add_input({"name": "TEXT", "data_type": "TYPE_STRING", "dims": [-1]})
        config.add_output({"name": "UPPER", "data_type": "TYPE_STRING", "dims": [-1]})
        config.set_max_batch_size(0)
        return config

    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            upper = np.array([t.upper() for t in text], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("UPPER", upper)]))
        return responses
"""


def test_string_tensors_go_through_the_mesh_both_ways(
    triton_node: mesh_fixtures.NodeThread, tmp_path: pathlib.Path
) -> None:
    """BYTES tensors (Triton's string examples): UTF-8 and binary elements,
    an empty one, arrive and come back byte for byte."""
    folder = tmp_path / "upper"
    folder.mkdir()
    (folder / "model.py").write_text(UPPER_MODEL)
    with triton_node.client() as c:
        c.apply(mesh_fixtures.predictor_spec("upper-t", folder, "python"))
    words = np.array(["héllo".encode(), b"", b"\x00\xffbin", b"mesh"], dtype=np.object_)
    with triton.InferenceServerClient(triton_node.endpoint) as c:
        inp = triton.InferInput("TEXT", [len(words)], "BYTES")
        inp.set_data_from_numpy(words)
        got = c.infer("upper-t", [inp], client_timeout=120).as_numpy("UPPER")
    assert list(got) == [w.upper() for w in words]
