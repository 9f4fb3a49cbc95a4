"""The V2 gRPC service on :8033, as a generic handler over raw bytes.

``inference.GRPCInferenceService`` methods are dispatched by name without a
protobuf deserializer: model-scoped calls go to :class:`router.dataplane.DataPlane`
as bytes; ``ServerLive``, ``ServerReady``, ``ServerMetadata`` and ``ModelReady``
are answered by the mesh itself; methods that would manage the runtime behind
the mesh's back (``RepositoryModelLoad``...) are refused with ``UNIMPLEMENTED``
and a pointer to the management API. Errors are mapped to statuses here, with
the table of :mod:`mesh.grpc_status`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from mesh import errors, grpc_status, metrics
from router import dataplane

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
_ROUTED = frozenset({"ModelInfer", "ModelMetadata", "ModelConfig"})

Readiness = Callable[[], Awaitable[bool]]


class InferenceService(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Dispatches ``/inference.GRPCInferenceService/*`` calls."""

    def __init__(
        self,
        plane: dataplane.DataPlane,
        ready: Readiness,
        version: str,
        node_metrics: metrics.Metrics | None = None,
    ) -> None:
        self._plane = plane
        self._ready = ready
        self._version = version
        self._metrics = node_metrics or metrics.Metrics()

    def service(self, handler_call_details: Any) -> Any:
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        if service != SERVICE:
            return None
        if method in _ROUTED:
            return grpc.unary_unary_rpc_method_handler(self._routed(method))
        local = {
            "ServerLive": self._server_live,
            "ServerReady": self._server_ready,
            "ServerMetadata": self._server_metadata,
            "ModelReady": self._model_ready,
        }.get(method)
        if local is not None:
            return grpc.unary_unary_rpc_method_handler(local)
        if method == "ModelStreamInfer":
            return grpc.stream_stream_rpc_method_handler(self._refuse_stream)
        return grpc.unary_unary_rpc_method_handler(self._refuse(method))

    def _routed(self, method: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
        async def handle(request: bytes, context: Any) -> bytes:
            t0 = time.monotonic()
            code = grpc.StatusCode.OK
            details = ""
            try:
                return await self._plane.call(
                    method,
                    request,
                    list(context.invocation_metadata() or ()),
                    context.time_remaining(),
                )
            except dataplane.UpstreamError as e:
                code, details = getattr(grpc.StatusCode, e.code), e.details
            except errors.MeshError as e:
                code, details = grpc_status.code_for(e), e.message
            except Exception:
                log.exception("%s failed", method)
                code, details = grpc.StatusCode.INTERNAL, f"{method} failed; see node log"
            finally:
                self._metrics.api_call(method, code.name, (time.monotonic() - t0) * 1000)
            await context.abort(code, details)
            raise AssertionError("unreachable")

        return handle

    async def _server_live(self, request: bytes, context: Any) -> bytes:
        out: bytes = service_pb2.ServerLiveResponse(live=True).SerializeToString()
        return out

    async def _server_ready(self, request: bytes, context: Any) -> bytes:
        out: bytes = service_pb2.ServerReadyResponse(ready=await self._ready()).SerializeToString()
        return out

    async def _server_metadata(self, request: bytes, context: Any) -> bytes:
        out: bytes = service_pb2.ServerMetadataResponse(
            name="meshserve", version=self._version, extensions=[]
        ).SerializeToString()
        return out

    async def _model_ready(self, request: bytes, context: Any) -> bytes:
        try:
            ready = self._plane.model_ready(request, list(context.invocation_metadata() or ()))
        except errors.MeshError as e:
            await context.abort(grpc_status.code_for(e), e.message)
        out: bytes = service_pb2.ModelReadyResponse(ready=ready).SerializeToString()
        return out

    def _refuse(self, method: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
        async def handle(request: bytes, context: Any) -> bytes:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"meshserve does not serve {method}: models are managed through the "
                "mmesh.ModelMesh API (registerModel, unregisterModel, ensureLoaded)",
            )
            raise AssertionError("unreachable")

        return handle

    async def _refuse_stream(self, requests: Any, context: Any) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "ModelStreamInfer is not supported by meshserve yet"
        )
