"""``ModelStreamInfer`` through the mesh.

Three runtimes behind real nodes:

- **Triton** (the real binary) with a decoupled Python-backend model that
  answers every request three times: a stream sent with ``tritonclient`` to
  the node that does not hold the model is pinned to the peer that does, and
  every answer comes back.
- **MLServer 1.7**, which implements ``ModelStreamInfer``: its default
  ``predict_stream`` answers the first message of a stream with the model's
  ``predict`` and ends the stream; through the mesh it answers as a call does.
- **A scripted V2 runtime** (a gRPC server of the test's own, speaking the
  real protocol, standing in for a runtime so that the test decides what it
  answers), for what no real runtime here does on demand: count which copy
  saw which message, refuse streaming (``UNIMPLEMENTED``), answer too much.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import pathlib
import queue
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient import grpc as triton
from tritonclient.grpc import service_pb2

from mesh.core import settings
from mesh.edges import etcd_process
from meshserve import samples
from router import wire
from tests.integration import mesh_fixtures

_INFER = "/inference.GRPCInferenceService/ModelInfer"
_STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


def _request(name: str, x: np.ndarray, request_id: str = "", input_name: str = "predict") -> bytes:
    msg = service_pb2.ModelInferRequest(model_name=name, id=request_id)
    dtype = "FP32" if x.dtype == np.float32 else "FP64"
    msg.inputs.add(name=input_name, datatype=dtype, shape=list(x.shape))
    msg.raw_input_contents.append(x.tobytes())
    data: bytes = msg.SerializeToString()
    return data


def _stream(endpoint: str, requests: list[bytes], timeout: float = 60) -> list[Any]:
    """Send ``requests`` on one stream; the ``ModelStreamInferResponse`` s."""
    with grpc.insecure_channel(endpoint) as ch:
        call = ch.stream_stream(_STREAM)(iter(requests), timeout=timeout)
        return [service_pb2.ModelStreamInferResponse.FromString(r) for r in call]


def test_the_model_name_inside_a_stream_answer_is_rewritten() -> None:
    inner = service_pb2.ModelInferResponse(model_name="iris__ksp-1", id="7")
    outer = service_pb2.ModelStreamInferResponse(error_message="", infer_response=inner)
    got = service_pb2.ModelStreamInferResponse.FromString(
        wire.rewrite_nested_name(outer.SerializeToString(), 2, "iris")
    )
    assert got.infer_response.model_name == "iris" and got.infer_response.id == "7"
    bare = service_pb2.ModelStreamInferResponse(error_message="boom").SerializeToString()
    assert wire.rewrite_nested_name(bare, 2, "iris") == bare


# --- Triton: a decoupled model, two nodes ----------------------------------------------------

DECOUPLED_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                sender = request.get_response_sender()
                for k in (1, 2, 3):
                    out = pb_utils.Tensor("OUTPUT0", (x * k).astype(np.float32))
                    sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
    """
)
DECOUPLED_CONFIG = textwrap.dedent(
    """\
    name: "triple"
    backend: "python"
    max_batch_size: 0
    model_transaction_policy { decoupled: true }
    input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
    output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
    """
)


def _start(configs: list[settings.Settings]) -> list[mesh_fixtures.NodeThread]:
    threads = [mesh_fixtures.NodeThread(c) for c in configs]
    with concurrent.futures.ThreadPoolExecutor(len(threads)) as pool:
        started = [pool.submit(t.start) for t in threads]
    try:
        for f in started:
            f.result()
    except BaseException:
        mesh_fixtures.stop_cluster(threads)
        raise
    return threads


@pytest.fixture(scope="module")
def triton_nodes(
    module_etcd: etcd_process.EtcdServer,
    tmp_path_factory: pytest.TempPathFactory,
    triton_venv: pathlib.Path,
) -> Iterator[list[mesh_fixtures.NodeThread]]:
    configs = []
    for i in range(2):
        base = mesh_fixtures.node_settings(
            module_etcd.endpoint, tmp_path_factory.mktemp(f"triton{i}-"), prefix="tritonstream"
        )
        configs.append(
            dataclasses.replace(base, runtime=dataclasses.replace(base.runtime, kind="triton"))
        )
    threads = _start(configs)
    try:
        yield threads
    finally:
        mesh_fixtures.stop_cluster(threads)


def test_a_stream_to_a_decoupled_triton_model_on_another_node_gets_every_answer(
    triton_nodes: list[mesh_fixtures.NodeThread], tmp_path: pathlib.Path
) -> None:
    folder = tmp_path / "triple"
    folder.mkdir()
    (folder / "model.py").write_text(DECOUPLED_MODEL)
    (folder / "config.pbtxt").write_text(DECOUPLED_CONFIG)
    with triton_nodes[0].client() as c:
        c.apply(mesh_fixtures.predictor_spec("triple", folder, model_type="python"))
    x = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    # Load it on node 1 with a first stream there, then stream through node 0.
    assert len(_stream(triton_nodes[1].endpoint, [_request("triple", x, "", "INPUT0")])) == 3
    holder = triton_nodes[1] if triton_nodes[1].node.manager.model_count() else triton_nodes[0]
    entry = triton_nodes[0] if holder is triton_nodes[1] else triton_nodes[1]
    before = entry.node.plane.forwarded

    answers: queue.Queue[Any] = queue.Queue()
    with triton.InferenceServerClient(entry.endpoint) as c:
        c.start_stream(callback=lambda result, error: answers.put((result, error)))
        for i in range(2):
            inp = triton.InferInput("INPUT0", [3], "FP32")
            inp.set_data_from_numpy(x * (i + 1))
            c.async_stream_infer("triple", [inp], request_id=f"r{i}")
        got = [answers.get(timeout=30) for _ in range(6)]
        c.stop_stream()
    assert all(error is None for _, error in got)
    outputs = sorted(tuple(r.as_numpy("OUTPUT0").tolist()) for r, _ in got)
    want = sorted(tuple((x * (i + 1) * k).tolist()) for i in range(2) for k in (1, 2, 3))
    assert outputs == want
    assert {r.get_response().model_name for r, _ in got} == {"triple"}  # the name asked
    assert entry.node.plane.forwarded == before + 1  # one stream, pinned to one peer


# --- MLServer: its streaming answers once ---------------------------------------------------


def test_mlserver_answers_a_stream_through_the_mesh_as_it_answers_a_call(
    mesh_node: mesh_fixtures.NodeThread, tmp_path: pathlib.Path
) -> None:
    sample = samples.train_iris_logistic(tmp_path / "iris")
    with mesh_node.client() as c:
        c.apply(mesh_fixtures.predictor_spec("iris-stream", sample.folder))
    got = _stream(mesh_node.endpoint, [_request("iris-stream", sample.inputs, "s1")])
    assert len(got) == 1 and not got[0].error_message
    answer = got[0].infer_response
    assert answer.model_name == "iris-stream" and answer.id == "s1"
    out = np.frombuffer(answer.raw_output_contents[0], dtype=np.int64)
    np.testing.assert_array_equal(out, sample.expected)


# --- A scripted runtime: pinning, refusals, limits ---------------------------------------------


class ScriptedRuntime:
    """A V2 gRPC runtime on 127.0.0.1 that loads anything, answers each
    stream message three times (in MLServer's dialect: the node drives it with
    its MLServer adapter), and records what it was sent.

    ``streaming = False`` makes it answer ``ModelStreamInfer`` with gRPC's
    own ``UNIMPLEMENTED``, as a runtime without the method does;
    ``lost = True`` makes streams fail with ``NOT_FOUND`` until the next
    load, as a restarted runtime that lost its models does. A ``ModelInfer``
    whose id is ``size:N`` gets an answer with N bytes of output.
    """

    def __init__(self) -> None:
        self.streamed: list[str] = []
        self.loads = 0
        self.streaming = True
        self.lost = False
        self._lock = threading.Lock()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(8))
        self.server.add_generic_rpc_handlers([self])
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def service(self, details: Any) -> Any:
        method = details.method.rpartition("/")[2]
        if method == "ModelStreamInfer":
            return grpc.stream_stream_rpc_method_handler(self._stream) if self.streaming else None
        handlers = {
            "ServerReady": lambda r, c: service_pb2.ServerReadyResponse(ready=True),
            "ServerLive": lambda r, c: service_pb2.ServerLiveResponse(live=True),
            "RepositoryModelLoad": self._load,
            "RepositoryModelUnload": lambda r, c: service_pb2.RepositoryModelUnloadResponse(),
            "ModelInfer": self._infer,
        }
        request_types = {
            "ServerReady": service_pb2.ServerReadyRequest,
            "ServerLive": service_pb2.ServerLiveRequest,
            "RepositoryModelLoad": service_pb2.RepositoryModelLoadRequest,
            "RepositoryModelUnload": service_pb2.RepositoryModelUnloadRequest,
            "ModelInfer": service_pb2.ModelInferRequest,
        }
        if method not in handlers:
            return None
        return grpc.unary_unary_rpc_method_handler(
            handlers[method],
            request_deserializer=request_types[method].FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )

    def _load(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.loads += 1
            self.lost = False
        return service_pb2.RepositoryModelLoadResponse()

    def _infer(self, request: Any, context: Any) -> Any:
        size = int(request.id.removeprefix("size:")) if request.id.startswith("size:") else 8
        out = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        out.outputs.add(name="out", datatype="BYTES", shape=[1])
        out.raw_output_contents.append(b"\x01" * size)
        return out

    def _stream(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        if self.lost:
            context.abort(grpc.StatusCode.NOT_FOUND, "Model not found")
        for data in requests:
            request = service_pb2.ModelInferRequest.FromString(data)
            with self._lock:
                self.streamed.append(request.model_name)
            for k in range(3):
                # Bare ModelInferResponses, as MLServer streams them (the
                # node, which takes this for an MLServer, wraps them).
                answer = service_pb2.ModelInferResponse(
                    model_name=request.model_name, id=f"{request.id}.{k}"
                )
                yield answer.SerializeToString()


SMALL_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def scripted(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[mesh_fixtures.NodeThread], list[ScriptedRuntime]]]:
    runtimes = [ScriptedRuntime(), ScriptedRuntime()]
    for r in runtimes:
        r.server.start()
    configs = []
    for i, r in enumerate(runtimes):
        base = mesh_fixtures.node_settings(
            module_etcd.endpoint, tmp_path_factory.mktemp(f"scripted{i}-"), prefix="scripted"
        )
        configs.append(
            dataclasses.replace(
                base,
                runtime=dataclasses.replace(base.runtime, endpoint=r.endpoint),
                service=dataclasses.replace(base.service, max_message_bytes=SMALL_LIMIT),
            )
        )
    try:
        threads = _start(configs)
        try:
            yield threads, runtimes
        finally:
            mesh_fixtures.stop_cluster(threads)
    finally:
        for r in runtimes:
            r.server.stop(None)


@pytest.fixture(scope="module")
def pinned(
    scripted: tuple[list[mesh_fixtures.NodeThread], list[ScriptedRuntime]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[
    mesh_fixtures.NodeThread, mesh_fixtures.NodeThread, ScriptedRuntime, ScriptedRuntime, str
]:
    """``streamer`` (a Predictor) loaded on one node: (entry node, holder
    node, the entry's runtime, the holder's runtime, the model id)."""
    nodes, runtimes = scripted
    sample = samples.train_iris_logistic(tmp_path_factory.mktemp("iris") / "model")
    spec = mesh_fixtures.predictor_spec("streamer", sample.folder)
    with nodes[0].client() as c:
        c.apply(spec)
    with grpc.insecure_channel(nodes[1].endpoint) as ch:
        ch.unary_unary(_INFER)(_request("streamer", np.zeros((1, 4))), timeout=30)
    i = 1 if nodes[1].node.manager.model_count() else 0
    return nodes[1 - i], nodes[i], runtimes[1 - i], runtimes[i], spec.model_id


def test_a_stream_is_pinned_to_the_one_copy_of_its_model_and_names_it_as_asked(
    pinned: tuple[Any, ...],
) -> None:
    entry, _, entry_runtime, holder_runtime, model_id = pinned
    before_entry, before_holder = len(entry_runtime.streamed), len(holder_runtime.streamed)
    forwarded = entry.node.plane.forwarded
    x = np.zeros((1, 4))
    got = _stream(entry.endpoint, [_request("streamer", x, f"m{i}") for i in range(3)])
    assert [a.infer_response.id for a in got] == [f"m{i}.{k}" for i in range(3) for k in range(3)]
    assert {a.infer_response.model_name for a in got} == {"streamer"}
    assert holder_runtime.streamed[before_holder:] == [model_id] * 3  # rewritten to the id
    assert len(entry_runtime.streamed) == before_entry
    assert entry.node.plane.forwarded == forwarded + 1


def test_a_later_message_naming_another_model_ends_the_stream(pinned: tuple[Any, ...]) -> None:
    entry = pinned[0]
    x = np.zeros((1, 4))
    with pytest.raises(grpc.RpcError) as e:
        _stream(entry.endpoint, [_request("streamer", x), _request("someone-else", x)])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "a stream serves one model" in (e.value.details() or "")


def test_a_stream_message_over_the_limit_is_refused_naming_the_limit(
    pinned: tuple[Any, ...],
) -> None:
    entry = pinned[0]
    big = np.zeros((SMALL_LIMIT // 32 + 10, 4))
    with pytest.raises(grpc.RpcError) as e:
        _stream(entry.endpoint, [_request("streamer", np.zeros((1, 4))), _request("streamer", big)])
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"over the limit of {SMALL_LIMIT} bytes (MM_SVC_GRPC_MAX_MSG_SIZE)" in (
        e.value.details() or ""
    )


def test_a_response_over_the_limit_is_refused_naming_the_limit(pinned: tuple[Any, ...]) -> None:
    entry = pinned[0]
    with grpc.insecure_channel(entry.endpoint) as ch:
        small = ch.unary_unary(_INFER)(
            _request("streamer", np.zeros((1, 4)), f"size:{SMALL_LIMIT - 1000}"), timeout=30
        )
        assert len(small) <= SMALL_LIMIT
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary(_INFER)(
                _request("streamer", np.zeros((1, 4)), f"size:{SMALL_LIMIT}"), timeout=30
            )
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = e.value.details() or ""
    assert "the response of model" in details and f"limit of {SMALL_LIMIT} bytes" in details


def test_a_runtime_without_streaming_answers_unimplemented_naming_the_runtime(
    pinned: tuple[Any, ...],
) -> None:
    entry, _, _, holder_runtime, model_id = pinned
    holder_runtime.streaming = False
    try:
        with pytest.raises(grpc.RpcError) as e:
            _stream(entry.endpoint, [_request("streamer", np.zeros((1, 4)))])
    finally:
        holder_runtime.streaming = True
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert (e.value.details() or "").startswith(
        f"model {model_id!r} is served by the mlserver runtime, which does not implement "
        "ModelStreamInfer"
    )


def test_a_stream_whose_runtime_lost_the_model_is_reloaded_and_retried_before_answering(
    pinned: tuple[Any, ...],
) -> None:
    entry, _, entry_runtime, holder_runtime, _ = pinned
    loads = holder_runtime.loads + entry_runtime.loads
    holder_runtime.lost = True
    x = np.zeros((1, 4))
    got = _stream(entry.endpoint, [_request("streamer", x, f"again{i}") for i in range(2)])
    assert [a.infer_response.id for a in got] == [
        f"again{i}.{k}" for i in range(2) for k in range(3)
    ]
    # Loaded again (where the mesh chose), then the stream started over there.
    assert holder_runtime.loads + entry_runtime.loads > loads
