"""The V2 gRPC service on :8033, as a generic handler over raw bytes.

``inference.GRPCInferenceService`` methods are dispatched by name without a
protobuf deserializer: model-scoped calls go to
:class:`router.dataplane.DataPlane` as bytes; ``ServerLive``, ``ServerReady``,
``ServerMetadata``, ``ModelReady`` and ``ModelStatistics`` (summed over the
mesh, :mod:`router.model_statistics`) are answered by the mesh itself, and so
are the model-repository and shared-memory calls
(:mod:`router.model_repository`); any other method is refused with
``UNIMPLEMENTED`` and a pointer to the management API. ``ModelStreamInfer``
is routed as a stream (:meth:`router.dataplane.DataPlane.stream`). Errors are
mapped to statuses here, with the table of :mod:`mesh.edges.grpc_status`; a
message over ``MM_SVC_GRPC_MAX_MSG_SIZE`` is ``RESOURCE_EXHAUSTED`` naming
the limit.

:class:`ModelLogContext` is the :8033 server's interceptor that makes every
log line of a management call naming a model (``registerModel``,
``ensureLoaded``, a peer's ``EnsureLocal``...) carry that model's id
(:mod:`mesh.node.logs`); the data plane does the same for routed calls itself.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from mesh.core import errors
from mesh.edges import grpc_status
from mesh.node import logs, metrics
from router import (
    dataplane,
    infer_checks,
    model_repository,
    model_statistics,
    streams,
    upstream,
    v2json,
)

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
PROTO_FILE = service_pb2.DESCRIPTOR
"""The V2 protocol's proto file (with its imports), for server reflection."""
_ROUTED = frozenset({"ModelInfer", "ModelMetadata", "ModelConfig"})
_LOCAL = frozenset({"ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelStatistics"})
_REPOSITORY = frozenset(
    {model_repository.INDEX, model_repository.LOAD, model_repository.UNLOAD}
    | model_repository.SHARED_MEMORY
)
_KNOWN = _ROUTED | _LOCAL | _REPOSITORY | {streams.STREAM_METHOD}

Readiness = Callable[[], Awaitable[bool]]


class InferenceService(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Dispatches ``/inference.GRPCInferenceService/*`` calls."""

    def __init__(
        self,
        plane: dataplane.DataPlane,
        ready: Readiness,
        version: str,
        node_metrics: metrics.Metrics | None = None,
        statistics: model_statistics.StatisticsService | None = None,
        repository: model_repository.ModelRepository | None = None,
    ) -> None:
        self._plane = plane
        self._ready = ready
        self._version = version
        self._metrics = node_metrics or metrics.Metrics()
        self._statistics = statistics
        self._repository = repository
        self._handlers: dict[str, Any] = {}

    def service(self, handler_call_details: Any) -> Any:
        path: str = handler_call_details.method
        handler = self._handlers.get(path)
        if handler is not None:
            return handler
        service, _, method = path.lstrip("/").partition("/")
        if service != SERVICE:
            return None
        handler = self._handler_for(method)
        if method in _KNOWN:  # kept: grpc asks on every call; unknown names are not kept
            self._handlers[path] = handler
        return handler

    def _handler_for(self, method: str) -> Any:
        if method in _ROUTED:
            return grpc.unary_unary_rpc_method_handler(self._routed(method))
        local = {
            "ServerLive": self._server_live,
            "ServerReady": self._server_ready,
            "ServerMetadata": self._server_metadata,
            "ModelReady": self._model_ready,
            model_statistics.METHOD: self._model_statistics if self._statistics else None,
        }.get(method)
        if local is not None:
            return grpc.unary_unary_rpc_method_handler(local)
        if method == streams.STREAM_METHOD:
            return grpc.stream_stream_rpc_method_handler(self._stream)
        if self._repository is not None and method in _REPOSITORY:
            return grpc.unary_unary_rpc_method_handler(self._repository_call(method))
        return grpc.unary_unary_rpc_method_handler(self._refuse(method))

    def _routed(self, method: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
        async def handle(request: bytes, context: Any) -> bytes:
            t0 = time.monotonic()
            try:
                response = await self._plane.call(
                    method, request, context.invocation_metadata() or (), context.time_remaining()
                )
            except Exception as e:
                code, details = _status(method, infer_checks.refined(method, request, e))
                self._metrics.api_call(method, code.name, (time.monotonic() - t0) * 1000)
            else:
                self._metrics.api_call(method, "OK", (time.monotonic() - t0) * 1000)
                return response
            await context.abort(code, details)
            raise AssertionError("unreachable")

        return handle

    async def _stream(self, requests: Any, context: Any) -> AsyncIterator[bytes]:
        method = streams.STREAM_METHOD
        t0 = time.monotonic()
        code = grpc.StatusCode.OK
        details = ""
        try:
            async for response in self._plane.stream(
                method,
                requests,
                list(context.invocation_metadata() or ()),
                context.time_remaining(),
            ):
                yield response
        except Exception as e:
            code, details = _status(method, e)
        finally:
            self._metrics.api_call(method, code.name, (time.monotonic() - t0) * 1000)
        if code is not grpc.StatusCode.OK:
            await context.abort(code, details)

    async def _server_live(self, request: bytes, context: Any) -> bytes:
        out: bytes = service_pb2.ServerLiveResponse(live=True).SerializeToString()
        return out

    async def _server_ready(self, request: bytes, context: Any) -> bytes:
        out: bytes = service_pb2.ServerReadyResponse(ready=await self._ready()).SerializeToString()
        return out

    async def _server_metadata(self, request: bytes, context: Any) -> bytes:
        out: bytes = service_pb2.ServerMetadataResponse(
            name="meshserve", version=self._version, extensions=list(v2json.SERVED_EXTENSIONS)
        ).SerializeToString()
        return out

    async def _model_ready(self, request: bytes, context: Any) -> bytes:
        try:
            ready = self._plane.model_ready(request, list(context.invocation_metadata() or ()))
        except errors.MeshError as e:
            await context.abort(grpc_status.code_for(e), e.message)
        out: bytes = service_pb2.ModelReadyResponse(ready=ready).SerializeToString()
        return out

    async def _model_statistics(self, request: bytes, context: Any) -> bytes:
        assert self._statistics is not None
        try:
            return await self._statistics.answer(request, list(context.invocation_metadata() or ()))
        except errors.MeshError as e:
            await context.abort(grpc_status.code_for(e), e.message)
            raise AssertionError("unreachable") from None

    def _repository_call(self, method: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
        """The model-repository and shared-memory calls (:mod:`router.model_repository`)."""
        repository = self._repository
        assert repository is not None

        async def handle(request: bytes, context: Any) -> bytes:
            headers = list(context.invocation_metadata() or ())
            try:
                if method == model_repository.INDEX:
                    return repository.index(request)
                if method == model_repository.LOAD:
                    return await repository.load(request, headers)
                if method == model_repository.UNLOAD:
                    return await repository.unload(request, headers)
                answer = model_repository.shared_memory(method)
            except errors.MeshError as e:
                await context.abort(grpc_status.code_for(e), e.message)
                raise AssertionError("unreachable") from None
            if answer is None:
                await context.abort(
                    grpc.StatusCode.UNIMPLEMENTED, model_repository.SHARED_MEMORY_REFUSAL
                )
            assert answer is not None
            return answer

        return handle

    def _refuse(self, method: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
        async def handle(request: bytes, context: Any) -> bytes:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"meshserve does not serve {method}: models are managed through the "
                "mmesh.ModelMesh API (registerModel, unregisterModel, ensureLoaded)",
            )
            raise AssertionError("unreachable")

        return handle


def _status(method: str, error: Exception) -> tuple[Any, str]:
    """The status and message of a failed routed call."""
    if isinstance(error, upstream.UpstreamError):
        return getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN), error.details
    if isinstance(error, errors.MeshError):
        return grpc_status.code_for(error), error.message
    log.error("%s failed", method, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"{method} failed; see node log"


_MODEL_FIELDS = ("modelId", "model_id", "targetModelId", "vModelId")


def model_named(request: Any) -> str:
    """The model a management request names (``""`` if none)."""
    for field in _MODEL_FIELDS:
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value
    return ""


class ModelLogContext(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs each unary call whose request names a model (a decoded protobuf
    with ``modelId`` / ``model_id`` / ``targetModelId`` / ``vModelId``) inside
    :func:`mesh.node.logs.about_model`. Raw-bytes handlers (the V2 data plane,
    which does this itself) pass through untouched."""

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or handler.unary_unary is None
            or handler.request_deserializer is None
            or not inspect.iscoroutinefunction(handler.unary_unary)
        ):
            return handler
        inner = handler.unary_unary

        async def behaviour(request: Any, context: Any) -> Any:
            model = model_named(request)
            if not model:
                return await inner(request, context)
            with logs.about_model(model):
                return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
