"""What an operator scrapes and probes: ModelMesh's metric names on the
metrics port, /live and /ready on the probe port."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import urllib.error
import urllib.request
from typing import Any

import grpc
import grpc_tools.protoc
import numpy as np
import psutil
import pytest
from google.protobuf import descriptor_pb2

from mesh.edges import etcd_process, health_grpc
from meshserve import samples
from tests.integration import mesh_fixtures


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _value(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{series} not in the metrics"
    return float(m.group(1))


def test_metrics_use_modelmesh_names_and_count_what_happened(
    mesh_node: mesh_fixtures.NodeThread, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sample = samples.train_iris_logistic(tmp_path_factory.mktemp("m") / "iris")
    with mesh_node.client() as c:
        c.apply(mesh_fixtures.predictor_spec("metered", sample.folder))
    for _ in range(3):
        got = mesh_fixtures.infer(mesh_node.endpoint, "metered", sample.inputs)
        np.testing.assert_array_equal(got, sample.expected)
    status, text = _get(mesh_node.node.ops.ports["metrics"], "/metrics")
    assert status == 200
    # The fixture's node measures its capacity from the machine's memory.
    capacity = _value(text, "modelmesh_instance_capacity_bytes")
    assert capacity == mesh_node.node.manager.capacity_bytes
    assert 0 < capacity <= psutil.virtual_memory().total
    assert _value(text, "modelmesh_instance_used_bytes") > 0
    assert _value(text, "modelmesh_instance_models_total") >= 1
    assert _value(text, "modelmesh_models_managed_total") >= 1
    ok_calls = 'modelmesh_api_request_milliseconds_count{code="OK",method="ModelInfer"}'
    assert _value(text, ok_calls) >= 3
    assert _value(text, "modelmesh_loadmodel_milliseconds_count") >= 1
    assert _value(text, "modelmesh_cache_miss_milliseconds_count") >= 1
    assert _value(text, "modelmesh_request_size_bytes_count") >= 3
    for name in (
        "modelmesh_invoke_model_milliseconds",
        "modelmesh_response_size_bytes",
        "modelmesh_unloadmodel_milliseconds",
        "modelmesh_model_evicted",
        "modelmesh_age_at_eviction_milliseconds",
        "modelmesh_loaded_model_size_bytes",
        "modelmesh_loadmodel_failure",
        "modelmesh_models_loaded_total",
        "modelmesh_models_with_failure_total",
        "modelmesh_instance_lru_age_seconds",
    ):
        assert f"# TYPE {name}" in text


def test_probes_say_live_and_ready_and_not_ready_without_etcd(
    mesh_node: mesh_fixtures.NodeThread, module_etcd: etcd_process.EtcdServer
) -> None:
    port = mesh_node.node.ops.ports["probes"]
    assert _get(port, "/live") == (200, "live\n")
    assert _get(port, "/ready") == (200, "ready\n")
    module_etcd.stop()
    try:
        status, text = _get(port, "/ready")
        assert status == 503 and "etcd" in text
        assert _get(port, "/live")[0] == 200
    finally:
        module_etcd.start()
    assert _get(port, "/ready")[0] == 200


def _health(endpoint: str, service: str) -> int:
    """The status ``grpc.health.v1.Health/Check`` answers for ``service``."""
    request = b"\x0a" + bytes([len(service)]) + service.encode()
    with grpc.insecure_channel(endpoint) as channel:
        answer = channel.unary_unary("/grpc.health.v1.Health/Check")(request, timeout=10)
    return int(answer[1]) if answer else 0


def test_grpc_health_checks_follow_readiness_and_refuse_unknown_services(
    mesh_node: mesh_fixtures.NodeThread, module_etcd: etcd_process.EtcdServer
) -> None:
    for service in ("", "inference.GRPCInferenceService", "mmesh.ModelMesh"):
        assert _health(mesh_node.endpoint, service) == health_grpc.SERVING, service
    with pytest.raises(grpc.RpcError) as info:
        _health(mesh_node.endpoint, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    module_etcd.stop()
    try:
        assert _health(mesh_node.endpoint, "") == health_grpc.NOT_SERVING
    finally:
        module_etcd.start()
    mesh_fixtures.wait_for(lambda: _health(mesh_node.endpoint, "") == health_grpc.SERVING)


@pytest.fixture(scope="module")
def reflection_pb2(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The reflection messages compiled from the protocol's own proto file."""
    out = tmp_path_factory.mktemp("reflection")
    protos = pathlib.Path(__file__).parents[1] / "mesh" / "edges" / "protos"
    code = grpc_tools.protoc.main(
        ["protoc", f"-I{protos}", f"--python_out={out}", "reflection_v1alpha.proto"]
    )
    assert code == 0
    spec = importlib.util.spec_from_file_location(
        "reflection_v1alpha_pb2", out / "reflection_v1alpha_pb2.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_server_reflection_lists_the_services_and_serves_their_proto_files(
    mesh_node: mesh_fixtures.NodeThread, reflection_pb2: Any
) -> None:
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="inference.GRPCInferenceService"
        ),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="mmesh.ModelMesh"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
    ]
    with grpc.insecure_channel(mesh_node.endpoint) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        listed, inference, mmesh, unknown = list(info(iter(requests), timeout=30))
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "mmesh.ModelMesh", "grpc.health.v1.Health"} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in inference.file_descriptor_response.file_descriptor_proto
    ]
    assert [f.name for f in files] == ["grpc_service.proto", "model_config.proto"]
    (service,) = files[0].service
    assert "ModelInfer" in {m.name for m in service.method}
    (mesh_file,) = mmesh.file_descriptor_response.file_descriptor_proto
    assert "registerModel" in {
        m.name for m in descriptor_pb2.FileDescriptorProto.FromString(mesh_file).service[0].method
    }
    assert unknown.error_response.error_code == 5
