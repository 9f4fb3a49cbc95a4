"""The management API on the wire: ``mmesh.ModelMesh`` (KServe ModelMesh's
service, wire-compatible) and ``meshserve.admin.v1.MeshAdmin`` (listings for
the CLI).

Thin servicers: each method turns the request message into a call on
:class:`mesh.node.management.Management` and the answer back into a message. A
:class:`mesh.core.errors.MeshError` becomes the status of :mod:`mesh.edges.grpc_status`
with its message; anything else is logged and answered ``INTERNAL``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from mesh.core import errors, records
from mesh.edges import grpc_status
from mesh.edges.proto import meshserve_admin_pb2 as admin_pb2
from mesh.edges.proto import meshserve_admin_pb2_grpc as admin_pb2_grpc
from mesh.edges.proto import meshserve_peer_pb2 as peer_pb2
from mesh.edges.proto import meshserve_peer_pb2_grpc as peer_pb2_grpc
from mesh.edges.proto import model_mesh_pb2 as pb2
from mesh.edges.proto import model_mesh_pb2_grpc as pb2_grpc
from mesh.node import cache_manager, management

log = logging.getLogger(__name__)

_R = TypeVar("_R")
_Handler = Callable[[Any, Any, Any], Awaitable[_R]]


def _edge(method: _Handler[_R]) -> _Handler[_R]:
    """Map errors to statuses at the edge, once for every method."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Any) -> _R:
        try:
            return await method(self, request, context)
        except errors.MeshError as e:
            await context.abort(grpc_status.code_for(e), e.message)
        except Exception:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__} failed; see node log")
        raise AssertionError("unreachable")  # context.abort always raises

    return wrapper


def _model_status(view: management.ModelStatusView) -> Any:
    return pb2.ModelStatusInfo(
        status=view.status.value,
        errors=list(view.errors),
        modelCopyInfos=[
            pb2.ModelStatusInfo.ModelCopyInfo(
                location=c.location, copyStatus=c.status.value, time=c.time_ms
            )
            for c in view.copies
        ],
    )


def _vmodel_status(view: management.VModelStatusView) -> Any:
    msg = pb2.VModelStatusInfo(
        status=view.status.value,
        activeModelId=view.active_model_id,
        targetModelId=view.target_model_id,
        activeModelStatus=_model_status(view.active),
        owner=view.owner,
    )
    if view.target is not None:
        msg.targetModelStatus.CopyFrom(_model_status(view.target))
    return msg


def _info(msg: Any) -> management.ModelInfo:
    return management.ModelInfo(type=msg.type, path=msg.path, key=msg.key)


class ModelMeshServicer(pb2_grpc.ModelMeshServicer):  # type: ignore[misc]
    """``mmesh.ModelMesh``."""

    def __init__(self, handler: management.Management) -> None:
        self._h = handler

    @_edge
    async def registerModel(self, request: Any, context: Any) -> Any:
        if not request.HasField("modelInfo"):
            raise errors.InvalidRequest("modelInfo is required")
        view = await self._h.register_model(
            request.modelId,
            _info(request.modelInfo),
            load_now=request.loadNow,
            sync=request.sync,
            last_used_ms=request.lastUsedTime,
            min_copies=request.minCopies,
            max_copies=request.maxCopies,
        )
        return _model_status(view)

    @_edge
    async def unregisterModel(self, request: Any, context: Any) -> Any:
        await self._h.unregister_model(request.modelId)
        return pb2.UnregisterModelResponse()

    @_edge
    async def getModelStatus(self, request: Any, context: Any) -> Any:
        return _model_status(await self._h.get_model_status(request.modelId))

    @_edge
    async def ensureLoaded(self, request: Any, context: Any) -> Any:
        return _model_status(await self._h.ensure_loaded(request.modelId, sync=request.sync))

    @_edge
    async def setVModel(self, request: Any, context: Any) -> Any:
        return await _set_vmodel(self._h, request, None)

    @_edge
    async def deleteVModel(self, request: Any, context: Any) -> Any:
        await self._h.delete_vmodel(request.vModelId, request.owner)
        return pb2.DeleteVModelResponse()

    @_edge
    async def getVModelStatus(self, request: Any, context: Any) -> Any:
        return _vmodel_status(await self._h.get_vmodel_status(request.vModelId, request.owner))


async def _set_vmodel(
    h: management.Management,
    request: Any,
    canary: int | None,
    chain: management.ChainModels | None = None,
) -> Any:
    """``setVModel``, with a canary percent or none, and a chain or none."""
    view = await h.set_vmodel(
        request.vModelId,
        request.targetModelId,
        owner=request.owner,
        update_only=request.updateOnly,
        model_info=_info(request.modelInfo) if request.HasField("modelInfo") else None,
        auto_delete_target=request.autoDeleteTargetModel,
        load_now=request.loadNow,
        force=request.force,
        sync=request.sync,
        expected_target_model_id=request.expectedTargetModelId,
        min_copies=request.minCopies,
        max_copies=request.maxCopies,
        canary_percent=canary,
        chain=chain,
    )
    return _vmodel_status(view)


def _chain(request: Any) -> management.ChainModels | None:
    """The chain of a ``SetVModelSplitRequest`` (``None``: leave it)."""
    if not request.HasField("chain"):
        return None

    def step(field: str) -> management.ChainStep | None:
        if not request.chain.HasField(field):
            return None
        given = getattr(request.chain, field)
        return management.ChainStep(given.model_id, _info(given.model_info))

    return management.ChainModels(step("transformer"), step("explainer"))


class MeshAdminServicer(admin_pb2_grpc.MeshAdminServicer):  # type: ignore[misc]
    """``meshserve.admin.v1.MeshAdmin``: the placement table, read-only, and
    ``setVModel`` with a canary traffic split."""

    def __init__(self, handler: management.Management) -> None:
        self._h = handler

    @_edge
    async def SetVModelSplit(self, request: Any, context: Any) -> Any:
        canary = request.canary_percent if request.HasField("canary_percent") else None
        return await _set_vmodel(self._h, request.request, canary, _chain(request))

    @_edge
    async def ListModels(self, request: Any, context: Any) -> Any:
        out = admin_pb2.ModelList()
        for model_id, rec in sorted(self._h.models().items()):
            if not model_id.startswith(request.prefix):
                continue
            view = self._h.model_status(model_id)
            out.models.append(
                admin_pb2.ModelEntry(
                    model_id=model_id,
                    type=rec.model_type,
                    path=rec.path,
                    status=view.status.value,
                    copies=[
                        admin_pb2.ModelCopy(instance=k, state=c.state.value, since_ms=c.since_ms)
                        for k, c in rec.copies.items()
                    ],
                    failures=[
                        admin_pb2.ModelFailure(instance=k, time_ms=f.time_ms, message=f.message)
                        for k, f in rec.failures.items()
                    ],
                    size_bytes=rec.size_bytes,
                    last_used_ms=rec.last_used_ms,
                    refs=self._h.references(model_id),
                    auto_delete=rec.auto_delete,
                )
            )
        return out

    @_edge
    async def ListVModels(self, request: Any, context: Any) -> Any:
        out = admin_pb2.VModelList()
        for vmodel_id, v in sorted(self._h.vmodels().items()):
            if not vmodel_id.startswith(request.prefix):
                continue
            out.vmodels.append(
                admin_pb2.VModelEntry(
                    vmodel_id=vmodel_id,
                    owner=v.owner,
                    active_model_id=v.active_model,
                    target_model_id=v.target_model,
                    status=management.vmodel_status(v).value,
                    active_model_status=self._h.model_status(v.active_model).status.value,
                )
            )
        return out

    @_edge
    async def ListInstances(self, request: Any, context: Any) -> Any:
        out = admin_pb2.InstanceList()
        for instance_id, i in sorted(self._h.instances().items()):
            if not instance_id.startswith(request.prefix):
                continue
            out.instances.append(_instance_entry(instance_id, i))
        return out


def _instance_entry(instance_id: str, i: records.InstanceRecord) -> Any:
    return admin_pb2.InstanceEntry(
        instance_id=instance_id,
        endpoint=i.endpoint,
        capacity_bytes=i.capacity_bytes,
        used_bytes=i.used_bytes,
        lru_time_ms=i.lru_time_ms,
        model_count=i.model_count,
        in_flight_loads=i.in_flight_loads,
        rpm=i.rpm,
        labels=list(i.labels),
        shutting_down=i.shutting_down,
    )


class PeerServicer(peer_pb2_grpc.PeerServicer):  # type: ignore[misc]
    """``meshserve.peer.v1.Peer``: what other nodes ask of this one."""

    def __init__(self, manager: cache_manager.CacheManager) -> None:
        self._manager = manager

    @_edge
    async def EnsureLocal(self, request: Any, context: Any) -> Any:
        if request.sync:
            await self._manager.ensure_loaded(
                request.model_id, context.time_remaining(), extra_copy=request.extra_copy
            )
        else:
            self._manager.load_soon(request.model_id, extra_copy=request.extra_copy)
        return peer_pb2.EnsureLocalResponse(loaded=self._manager.holds(request.model_id))


SERVICES = ("mmesh.ModelMesh", "meshserve.admin.v1.MeshAdmin")
"""The services a client may call (the peer service is the nodes' own)."""
PROTO_FILES = (pb2.DESCRIPTOR, admin_pb2.DESCRIPTOR)
"""Their proto files, for server reflection (:mod:`mesh.edges.reflection_grpc`)."""


def add_to_server(
    server: Any, handler: management.Management, manager: cache_manager.CacheManager
) -> None:
    pb2_grpc.add_ModelMeshServicer_to_server(ModelMeshServicer(handler), server)
    admin_pb2_grpc.add_MeshAdminServicer_to_server(MeshAdminServicer(handler), server)
    peer_pb2_grpc.add_PeerServicer_to_server(PeerServicer(manager), server)
