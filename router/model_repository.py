"""Triton's model-repository and shared-memory calls, answered for the mesh.

Scripts written for Triton list, load and unload models with
``RepositoryIndex``, ``RepositoryModelLoad`` and ``RepositoryModelUnload``
(tritonclient's ``get_model_repository_index``, ``load_model``,
``unload_model``). Here the repository is the mesh's registry:
- the index lists every Predictor (vmodel) by name and every model no
  vmodel points to by id, with Triton's states (READY while a copy is
  loaded, LOADING, UNAVAILABLE with the reason otherwise);
- a load loads a registered model somewhere now (as ``ensureLoaded``); a
  model cannot be added this way: registering is the management API's job;
- an unload drops the model's copies on every node and keeps its
  registration (the next request loads it again).
Shared memory cannot cross the network between a client and the node that
holds a model: the status calls answer that none is registered, unregister
succeeds, and register is refused saying why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tritonclient.grpc import service_pb2

from mesh.core import clock, errors, records
from mesh.kv import placement_table
from mesh.node import cache_manager
from router import request_parsing, upstream

log = logging.getLogger(__name__)

INDEX, LOAD, UNLOAD = "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"
SHARED_MEMORY = frozenset(
    {
        f"{kind}SharedMemory{call}"
        for kind in ("System", "Cuda")
        for call in ("Status", "Register", "Unregister")
    }
)
PEER_TIMEOUT_SECONDS = 30.0

_STATES = {
    records.ModelStatus.LOADED: ("READY", ""),
    records.ModelStatus.LOADING: ("LOADING", ""),
    records.ModelStatus.NOT_LOADED: ("UNAVAILABLE", "unloaded: loads on its first request"),
}

EnsureLoaded = Callable[[str], Awaitable[object]]


def _message(msg: object) -> bytes:
    data: bytes = msg.SerializeToString()  # type: ignore[attr-defined]
    return data


class ModelRepository:
    """The repository calls of one node."""

    def __init__(
        self,
        mirror: placement_table.PlacementTable,
        manager: cache_manager.CacheManager,
        ensure_loaded: EnsureLoaded,
        self_id: str,
        peer: Callable[[str], upstream.Upstream],
        failure_expiry_ms: int,
    ) -> None:
        self._table = mirror
        self._manager = manager
        self._ensure_loaded = ensure_loaded
        self._self = self_id
        self._peer = peer
        self._expiry_ms = failure_expiry_ms

    def _entry(self, name: str, model_id: str) -> service_pb2.RepositoryIndexResponse.ModelIndex:
        rec = self._table.model(model_id)
        status = records.model_status(rec, clock.now_ms(), self._expiry_ms)
        state, reason = _STATES.get(status, ("UNAVAILABLE", ""))
        if status is records.ModelStatus.LOADING_FAILED and rec is not None:
            failures = records.recent_failures(rec, clock.now_ms(), self._expiry_ms)
            reason = max(failures.values(), key=lambda f: f.time_ms).message
        return service_pb2.RepositoryIndexResponse.ModelIndex(
            name=name, version="", state=state, reason=reason
        )

    def index(self, request: bytes) -> bytes:
        """``RepositoryIndexResponse``: Predictors by name, other models by id."""
        ready_only = service_pb2.RepositoryIndexRequest.FromString(request).ready
        vmodels = self._table.vmodels()
        behind = {v.active_model for v in vmodels.values()}
        named = [(v, rec.active_model) for v, rec in vmodels.items()]
        named += [(m, m) for m in self._table.models() if m not in behind]
        entries = [self._entry(name, model_id) for name, model_id in sorted(named)]
        if ready_only:
            entries = [e for e in entries if e.state == "READY"]
        return _message(service_pb2.RepositoryIndexResponse(models=entries))

    async def load(self, request: bytes, headers: request_parsing.Headers) -> bytes:
        """Load a registered model now, somewhere in the mesh."""
        name = service_pb2.RepositoryModelLoadRequest.FromString(request).model_name
        model_id = await self._resolved(name)
        await self._ensure_loaded(model_id)
        return _message(service_pb2.RepositoryModelLoadResponse())

    async def unload(self, request: bytes, headers: request_parsing.Headers) -> bytes:
        """Drop the model's copies here and, unless a peer asked, everywhere."""
        name = service_pb2.RepositoryModelUnloadRequest.FromString(request).model_name
        model_id = await self._resolved(name)
        if self._manager.has_copy(model_id):
            await self._manager.unload(model_id, "unloaded by RepositoryModelUnload")
        balanced = any(
            k.lower() == request_parsing.BALANCED_HEADER and v in ("true", b"true")
            for k, v in headers
        )
        if not balanced:
            rec = self._table.model(model_id)
            holders = [i for i in (rec.copies if rec else {}) if i != self._self]
            await asyncio.gather(*(self._unload_on(i, model_id) for i in holders))
        return _message(service_pb2.RepositoryModelUnloadResponse())

    async def _unload_on(self, instance: str, model_id: str) -> None:
        peer = self._table.instance(instance)
        if peer is None:
            return
        metadata = request_parsing.peer_metadata(model_id, frozenset())
        forwarded = _message(service_pb2.RepositoryModelUnloadRequest(model_name=model_id))
        try:
            await self._peer(peer.endpoint).call(UNLOAD, forwarded, PEER_TIMEOUT_SECONDS, metadata)
        except (upstream.UpstreamError, errors.MeshError) as e:
            log.warning("unloading %s on %s failed: %s", model_id, instance, e)

    async def _resolved(self, name: str) -> str:
        if not name:
            raise errors.InvalidRequest("model_name is empty")
        return await request_parsing.resolve_current(
            self._table, request_parsing.Requested("any", name)
        )


SHARED_MEMORY_REFUSAL = (
    "shared memory cannot be registered: the mesh forwards every request over the network "
    "to the node holding the model, so tensors must travel in the request"
)


def shared_memory(method: str) -> bytes | None:
    """Answer a shared-memory call: none is registered; ``None`` for a
    register call, which is refused (:data:`SHARED_MEMORY_REFUSAL`)."""
    if method in ("SystemSharedMemoryRegister", "CudaSharedMemoryRegister"):
        return None
    if method == "SystemSharedMemoryStatus":
        return _message(service_pb2.SystemSharedMemoryStatusResponse())
    if method == "CudaSharedMemoryStatus":
        return _message(service_pb2.CudaSharedMemoryStatusResponse())
    if method == "SystemSharedMemoryUnregister":
        return _message(service_pb2.SystemSharedMemoryUnregisterResponse())
    return _message(service_pb2.CudaSharedMemoryUnregisterResponse())
