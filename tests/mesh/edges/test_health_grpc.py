"""gRPC health checking on the wire: the two one-field messages, read and
written as protobuf does (checked against the health proto compiled here)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from mesh.edges import health_grpc


def _health_messages() -> tuple[Any, Any]:
    """HealthCheckRequest and HealthCheckResponse, built from their
    definition in grpc's health.proto (package grpc.health.v1)."""
    proto = descriptor_pb2.FileDescriptorProto(name="health_test.proto", package="t.health")
    req = proto.message_type.add(name="HealthCheckRequest")
    req.field.add(name="service", number=1, type=9, label=1)  # string
    resp = proto.message_type.add(name="HealthCheckResponse")
    resp.field.add(name="status", number=1, type=5, label=1)  # int32 wire form of the enum
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("t.health.HealthCheckRequest")),
        get(pool.FindMessageTypeByName("t.health.HealthCheckResponse")),
    )


Request, Response = _health_messages()


@pytest.mark.parametrize("name", ["", "inference.GRPCInferenceService", "é" * 100])
def test_the_service_asked_for_is_read_as_protobuf_writes_it(name: str) -> None:
    assert health_grpc.requested_service(Request(service=name).SerializeToString()) == name


@pytest.mark.parametrize("status", [health_grpc.SERVING, health_grpc.NOT_SERVING, 3])
def test_the_answer_reads_as_protobuf_reads_it(status: int) -> None:
    assert Response.FromString(health_grpc.status_message(status)).status == status
