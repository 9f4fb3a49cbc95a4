"""The REST edge's one table from a failure to an HTTP status.

A failure of the routing path reaches the REST edge as a mesh error or as a
runtime's (or peer's) gRPC status. Each gets the HTTP status of its gRPC
code (:data:`HTTP_STATUS`): a mesh error through
:mod:`mesh.edges.grpc_status`'s table first, a runtime's error with its own
code, so one failure has the same meaning on the gRPC and the REST port
(:func:`status_of`). A message over the size limit is 413.
"""

from __future__ import annotations

from mesh.core import errors
from mesh.edges import grpc_status
from router import client_messages, upstream

HTTP_STATUS: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    # The mesh's RESOURCE_EXHAUSTED means "no node has room for this model
    # now" (and, for a runtime, a message over its size limit): a server-side
    # condition, not a client sending too fast, so 503 rather than 429.
    "RESOURCE_EXHAUSTED": 503,
    # The mesh's FAILED_PRECONDITION means "this model failed to load"
    # (ModelLoadFailed). The request itself is fine; the model cannot be
    # served now, and the recorded failures expire. 400 would tell the
    # client to fix its request, which it cannot.
    "FAILED_PRECONDITION": 503,
    # The mesh's ABORTED is a lost race between nodes (Conflict, Reroute)
    # that outlived the routing retries: transient and not the caller's doing.
    "ABORTED": 503,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}
"""HTTP status of each gRPC status code (by name). Mesh errors reach it through
:mod:`mesh.edges.grpc_status`'s table, runtime errors with the runtime's own code,
so one failure gets one status on both protocols. Otherwise grpc-gateway's
mapping, which KServe's REST proxy uses."""


def http_status(code: str) -> int:
    """The HTTP status of a gRPC status code name (500 for one not known)."""
    return HTTP_STATUS.get(code, 500)


def status_of(error: Exception) -> tuple[int, str]:
    """HTTP status and message of a failure of the routing path."""
    if isinstance(error, upstream.UpstreamError):
        return http_status(error.code), error.details
    if isinstance(error, client_messages.MessageTooLarge):
        return 413, error.message
    if isinstance(error, errors.MeshError):
        return http_status(grpc_status.code_for(error).name), error.message
    raise TypeError(f"not a routing failure: {error!r}")
