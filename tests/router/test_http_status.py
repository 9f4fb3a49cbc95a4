"""One HTTP status per failure: a mesh error gets the status of its gRPC
code, a runtime's error keeps its code's meaning, on the REST edge as on gRPC."""

from __future__ import annotations

import grpc
import pytest

from mesh.core import errors
from router import http_status, upstream


def test_every_grpc_code_has_an_http_status() -> None:
    assert set(http_status.HTTP_STATUS) == {c.name for c in grpc.StatusCode}
    assert http_status.http_status("SOMETHING_NEW") == 500


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidRequest("bad"), 400),
        (errors.InvalidPredictor("spec.x", "bad"), 400),
        (errors.ModelNotFound("iris", "vmodel"), 404),
        (errors.AlreadyExists("taken"), 409),
        (errors.ModelLoadFailed("iris", "boom"), 503),
        (errors.InsufficientCapacity("full"), 503),
        (errors.RuntimeUnavailable("down"), 503),
        (errors.StoreUnavailable("etcd down"), 503),
        (errors.Conflict("lost"), 503),
        (errors.Reroute("elsewhere"), 503),
        (errors.DeadlineExceeded("late"), 504),
        (errors.ConfigError("bad setting"), 500),
        (errors.MeshError("odd answer"), 500),
    ],
)
def test_mesh_errors_get_one_http_status_each(error: errors.MeshError, status: int) -> None:
    assert http_status.status_of(error) == (status, error.message)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("INVALID_ARGUMENT", 400),
        ("NOT_FOUND", 404),
        ("FAILED_PRECONDITION", 503),
        ("RESOURCE_EXHAUSTED", 503),
        ("UNAVAILABLE", 503),
        ("DEADLINE_EXCEEDED", 504),
        ("UNIMPLEMENTED", 501),
        ("INTERNAL", 500),
        ("UNAUTHENTICATED", 401),
        ("PERMISSION_DENIED", 403),
    ],
)
def test_runtime_errors_keep_their_code_meaning(code: str, status: int) -> None:
    assert http_status.status_of(upstream.UpstreamError(code, "from the runtime")) == (
        status,
        "from the runtime",
    )
