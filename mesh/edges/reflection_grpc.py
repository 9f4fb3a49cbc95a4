"""gRPC server reflection on the node's :8033, so tools need no proto files.

``grpcurl list``, ``grpcurl describe`` and calls by name, Postman and
Evans ask a server which services it has and for the proto files that
define them (``grpc.reflection.v1alpha.ServerReflection`` and its ``v1``
twin). This module answers from the descriptors the process already holds
(the V2 inference protos, the management protos): the names of the services
the node serves, and a file with every file it imports. The reflection
messages themselves are defined here from their field numbers (the
``grpcio-reflection`` package for this gRPC needs a newer protobuf than the
runtimes accept).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICES = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")
NOT_FOUND = 5
"""``ErrorResponse.error_code`` for a file or symbol not known (gRPC's NOT_FOUND)."""

_STRING, _BYTES, _INT32, _MESSAGE = 9, 12, 5, 11
_OPTIONAL, _REPEATED = 1, 3


def _message_classes() -> dict[str, Any]:
    """The reflection request and response messages (the fields meshserve
    reads and writes), built from their field numbers."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="meshserve_reflection.proto", package="grpc.reflection.v1alpha", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, int, str], oneof: str = "") -> None:
        """A message; fields numbered above 2 form the one-of ``oneof``."""
        m = proto.message_type.add(name=name)
        if oneof:
            m.oneof_decl.add(name=oneof)
        for field, number, kind, label, type_name in fields:
            f = m.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                f.type_name = f".grpc.reflection.v1alpha.{type_name}"
            if oneof and number > 2:
                f.oneof_index = 0

    message(
        "ServerReflectionRequest",
        ("host", 1, _STRING, _OPTIONAL, ""),
        ("file_by_filename", 3, _STRING, _OPTIONAL, ""),
        ("file_containing_symbol", 4, _STRING, _OPTIONAL, ""),
        ("list_services", 7, _STRING, _OPTIONAL, ""),
        oneof="message_request",
    )
    message("FileDescriptorResponse", ("file_descriptor_proto", 1, _BYTES, _REPEATED, ""))
    message("ServiceResponse", ("name", 1, _STRING, _OPTIONAL, ""))
    message("ListServiceResponse", ("service", 1, _MESSAGE, _REPEATED, "ServiceResponse"))
    message(
        "ErrorResponse",
        ("error_code", 1, _INT32, _OPTIONAL, ""),
        ("error_message", 2, _STRING, _OPTIONAL, ""),
    )
    message(
        "ServerReflectionResponse",
        ("valid_host", 1, _STRING, _OPTIONAL, ""),
        ("original_request", 2, _MESSAGE, _OPTIONAL, "ServerReflectionRequest"),
        ("file_descriptor_response", 4, _MESSAGE, _OPTIONAL, "FileDescriptorResponse"),
        ("list_services_response", 6, _MESSAGE, _OPTIONAL, "ListServiceResponse"),
        ("error_response", 7, _MESSAGE, _OPTIONAL, "ErrorResponse"),
        oneof="message_response",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        m.name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"grpc.reflection.v1alpha.{m.name}")
        )
        for m in proto.message_type
    }


_MESSAGES = _message_classes()


def _with_imports(files: Iterable[pb_descriptor.FileDescriptor]) -> list[bytes]:
    """Each file's serialized proto, then every file it imports (once each)."""
    out: list[bytes] = []
    seen: set[str] = set()
    todo = list(files)
    while todo:
        f = todo.pop(0)
        if f.name in seen:
            continue
        seen.add(f.name)
        out.append(f.serialized_pb)
        todo.extend(f.dependencies)
    return out


class ReflectionService(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Server reflection over ``files``, listing ``services`` (and itself)."""

    def __init__(
        self, services: Sequence[str], files: Sequence[pb_descriptor.FileDescriptor]
    ) -> None:
        self._services = [*services, SERVICES[0]]
        self._by_name = {f.name: f for f in _with_descriptors(files)}
        self._symbols: dict[str, pb_descriptor.FileDescriptor] = {}
        for f in self._by_name.values():
            for symbol in _symbols_of(f):
                self._symbols.setdefault(symbol, f)

    def service(self, handler_call_details: Any) -> Any:
        if handler_call_details.method in {f"/{s}/ServerReflectionInfo" for s in SERVICES}:
            return grpc.stream_stream_rpc_method_handler(self._info)
        return None

    async def _info(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for data in requests:
            yield self.answer(data)

    def answer(self, data: bytes) -> bytes:
        """The ``ServerReflectionResponse`` to one ``ServerReflectionRequest``."""
        request = _MESSAGES["ServerReflectionRequest"].FromString(data)
        response = _MESSAGES["ServerReflectionResponse"](
            valid_host=request.host, original_request=request
        )
        asked = request.WhichOneof("message_request")
        if asked == "list_services":
            for name in self._services:
                response.list_services_response.service.add(name=name)
        else:
            found = self._by_name.get(request.file_by_filename) or self._symbols.get(
                request.file_containing_symbol
            )
            if found is None:
                what = getattr(request, asked) if asked else ""
                response.error_response.error_code = NOT_FOUND
                response.error_response.error_message = f"{what[:200]!r} is not known here"
            else:
                response.file_descriptor_response.file_descriptor_proto.extend(
                    _with_imports([found])
                )
        out: bytes = response.SerializeToString()
        return out


def _with_descriptors(
    files: Sequence[pb_descriptor.FileDescriptor],
) -> list[pb_descriptor.FileDescriptor]:
    """``files`` and every file they import."""
    out: dict[str, pb_descriptor.FileDescriptor] = {}
    todo = list(files)
    while todo:
        f = todo.pop()
        if f.name not in out:
            out[f.name] = f
            todo.extend(f.dependencies)
    return list(out.values())


def _symbols_of(f: pb_descriptor.FileDescriptor) -> list[str]:
    """The fully qualified names a file defines: services, their methods,
    messages (nested too) and enums."""
    names: list[str] = []
    for s in f.services_by_name.values():
        names.append(s.full_name)
        names.extend(m.full_name for m in s.methods)
    todo = list(f.message_types_by_name.values())
    while todo:
        m = todo.pop()
        names.append(m.full_name)
        todo.extend(m.nested_types)
        names.extend(e.full_name for e in m.enum_types)
    names.extend(e.full_name for e in f.enum_types_by_name.values())
    return names
