"""A client's mistakes get the client's statuses and cost no healthy model.

- A version a loaded model does not have is NOT_FOUND in Triton's words. A
  runtime answers an unknown version as it answers an unknown model
  (MLServer NOT_FOUND, Triton INTERNAL "unknown model"), which the mesh read
  as "the runtime lost the model": any client could unload and reload any
  healthy model by asking for version 99.
- A huge unknown name is NOT_FOUND with the name cut short (whole, it broke
  the client's metadata limit: RESOURCE_EXHAUSTED).
- Malformed inference requests the runtime refuses with its own INTERNAL or
  UNKNOWN are INVALID_ARGUMENT naming the input, and so are well-formed ones
  that do not fit the model (a wrong feature count, strings for numbers),
  and one input sent both as contents and raw (which MLServer would answer).

In every case the model's copy is neither unloaded nor loaded again. Real
etcd, MLServer and gRPC.
"""

from __future__ import annotations

import queue
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient import grpc as triton
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from mesh.node import metrics
from meshserve import samples
from tests.integration import mesh_fixtures


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> samples.Sample:
    return samples.train_iris_logistic(tmp_path_factory.mktemp("versions") / "iris")


def _loads_and_unloads(m: metrics.Metrics) -> tuple[float | None, float | None]:
    """How many loads and unloads the node has timed so far."""
    return (
        m.registry.get_sample_value("modelmesh_loadmodel_milliseconds_count"),
        m.registry.get_sample_value("modelmesh_unloadmodel_milliseconds_count"),
    )


def _infer_version(endpoint: str, name: str, x: np.ndarray, version: str) -> None:
    with triton.InferenceServerClient(endpoint) as c:
        inp = triton.InferInput("predict", list(x.shape), "FP64")
        inp.set_data_from_numpy(x.astype(np.float64))
        c.infer(name, [inp], model_version=version, client_timeout=60)


def _stream_version(endpoint: str, name: str, x: np.ndarray, version: str) -> Any:
    """The error a stream's first (and only) request for ``version`` ends with."""
    answers: queue.Queue[Any] = queue.Queue()
    with triton.InferenceServerClient(endpoint) as c:
        c.start_stream(callback=lambda result, error: answers.put(error))
        inp = triton.InferInput("predict", list(x.shape), "FP64")
        inp.set_data_from_numpy(x.astype(np.float64))
        c.async_stream_infer(name, [inp], model_version=version)
        error = answers.get(timeout=60)
        c.stop_stream()
    return error


def test_an_unknown_version_is_not_found_and_leaves_the_loaded_copy_alone(
    mesh_node: mesh_fixtures.NodeThread, iris: samples.Sample
) -> None:
    spec = mesh_fixtures.predictor_spec("iris-versions", iris.folder)
    manager = mesh_node.node.manager
    with mesh_node.client() as mesh:
        mesh.apply(spec)
        first = mesh_fixtures.infer(mesh_node.endpoint, "iris-versions", iris.inputs)
        np.testing.assert_array_equal(first, iris.expected)
        before = _loads_and_unloads(manager.metrics)
        assert before[0] == 1
        for _ in range(5):
            with pytest.raises(InferenceServerException) as info:
                _infer_version(mesh_node.endpoint, "iris-versions", iris.inputs, "99")
            assert info.value.status() == "StatusCode.NOT_FOUND", info.value.message()
            assert "version 99 is not found" in (info.value.message() or "")
        error = _stream_version(mesh_node.endpoint, "iris-versions", iris.inputs, "99")
        assert error is not None and "version 99 is not found" in str(error), error
        again = mesh_fixtures.infer(mesh_node.endpoint, "iris-versions", iris.inputs)
        np.testing.assert_array_equal(again, iris.expected)
        assert manager.holds(spec.model_id)
        assert _loads_and_unloads(manager.metrics) == before


def test_a_huge_unknown_name_is_not_found_with_the_name_cut_short(
    mesh_node: mesh_fixtures.NodeThread, iris: samples.Sample
) -> None:
    with pytest.raises(InferenceServerException) as info:
        mesh_fixtures.infer(mesh_node.endpoint, "m" * 10_000, iris.inputs)
    assert info.value.status() == "StatusCode.NOT_FOUND", info.value.message()
    message = info.value.message() or ""
    assert message.startswith("Request for unknown model: 'mmm") and "10000 characters" in message


def _raw_infer(endpoint: str, request: bytes) -> grpc.RpcError:
    """The error of a ModelInfer sent as raw bytes."""
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=60)
    return info.value


def _malformed(name: str) -> dict[str, bytes]:
    tensor = service_pb2.ModelInferRequest.InferInputTensor
    short = service_pb2.ModelInferRequest(
        model_name=name, inputs=[tensor(name="predict", datatype="FP64", shape=[1, 4])]
    )
    short.raw_input_contents.append(b"\0" * 8)  # one value of four
    unknown = service_pb2.ModelInferRequest(
        model_name=name, inputs=[tensor(name="predict", datatype="FLOAT64", shape=[1, 4])]
    )
    unknown.raw_input_contents.append(b"\0" * 32)
    named = service_pb2.ModelInferRequest(model_name=name).SerializeToString()
    features = service_pb2.ModelInferRequest(
        model_name=name, inputs=[tensor(name="predict", datatype="FP64", shape=[1, 3])]
    )
    features.raw_input_contents.append(b"\0" * 24)  # iris has 4 features
    both = service_pb2.ModelInferRequest(
        model_name=name, inputs=[tensor(name="predict", datatype="FP64", shape=[1, 4])]
    )
    both.inputs[0].contents.fp64_contents.extend([1.0, 2.0, 3.0, 4.0])
    both.raw_input_contents.append(b"\0" * 32)
    strings = service_pb2.ModelInferRequest(
        model_name=name, inputs=[tensor(name="predict", datatype="BYTES", shape=[1, 4])]
    )
    strings.inputs[0].contents.bytes_contents.extend([b"a", b"b", b"c", b"d"])
    return {
        "short raw tensor": short.SerializeToString(),
        "unknown datatype": unknown.SerializeToString(),
        "not protobuf after the name": named + b"\x12\xff\xff",
        "wrong feature count": features.SerializeToString(),
        "contents and raw": both.SerializeToString(),
        "strings for a numeric model": strings.SerializeToString(),
    }


def test_malformed_requests_are_invalid_argument_and_leave_the_model_alone(
    mesh_node: mesh_fixtures.NodeThread, iris: samples.Sample
) -> None:
    spec = mesh_fixtures.predictor_spec("iris-malformed", iris.folder)
    manager = mesh_node.node.manager
    with mesh_node.client() as mesh:
        mesh.apply(spec)
    mesh_fixtures.infer(mesh_node.endpoint, "iris-malformed", iris.inputs)
    before = _loads_and_unloads(manager.metrics)
    for case, request in _malformed("iris-malformed").items():
        e = _raw_infer(mesh_node.endpoint, request)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, e.code(), e.details())
        assert e.details(), case
    again = mesh_fixtures.infer(mesh_node.endpoint, "iris-malformed", iris.inputs)
    np.testing.assert_array_equal(again, iris.expected)
    assert _loads_and_unloads(manager.metrics) == before
