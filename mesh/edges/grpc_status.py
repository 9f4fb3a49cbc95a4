"""One table from the mesh's errors to gRPC status codes, used at every gRPC
edge (the data plane and the management API) so that the same failure always
gets the same code."""

from __future__ import annotations

import grpc

from mesh.core import errors

STATUS: dict[type[errors.MeshError], grpc.StatusCode] = {
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.ModelLoadFailed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InsufficientCapacity: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.NoSupportingRuntime: grpc.StatusCode.FAILED_PRECONDITION,
    errors.RuntimeUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ConfigError: grpc.StatusCode.INTERNAL,
}


def code_for(error: errors.MeshError) -> grpc.StatusCode:
    """The status code of ``error``: that of its nearest class in the table."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL
