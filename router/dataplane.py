"""Routing of a model-scoped V2 call, free of any transport.

For each ``ModelInfer`` / ``ModelMetadata`` / ``ModelConfig`` call:

1. find the id: header ``mm-vmodel-id`` / ``mm-model-id`` (or their ``-bin``
   UTF-8 forms), else field 1 of the request bytes;
2. resolve it: a vmodel (Predictor name) to its active concrete model, else a
   concrete model id; unknown → :class:`mesh.errors.ModelNotFound`;
3. hold a ready local copy (loading it on a miss, within the deadline);
4. forward the bytes with field 1 rewritten to the concrete id, through the
   :class:`Upstream` seam (:mod:`router.forward` is the gRPC one);
5. give the answer back with its name set to the name the caller used.

If the runtime says it does not know the model (it restarted, or lost it),
the copy is forgotten and the call is tried once more with a fresh load.
Every other runtime error is passed through with the runtime's status.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Protocol

from mesh import cache_manager, errors, records, table
from router import wire

VMODEL_HEADER = "mm-vmodel-id"
MODEL_HEADER = "mm-model-id"

# Methods whose response carries the model name in field 1.
_NAMED_RESPONSES = frozenset({"ModelInfer", "ModelMetadata"})


@dataclasses.dataclass
class UpstreamError(Exception):
    """The runtime answered with an error status (code name as in gRPC)."""

    code: str
    details: str


class Upstream(Protocol):
    """Sends raw request bytes to the runtime and returns raw response bytes."""

    async def call(self, method: str, request: bytes, timeout: float | None) -> bytes:
        """Raise :class:`UpstreamError` for an error status."""
        ...


def requested_id(request: bytes, headers: Sequence[tuple[str, str | bytes]]) -> tuple[str, str]:
    """``(kind, id)`` of the model a call names: kind is ``vmodel``, ``model``
    or ``any`` (from field 1: a vmodel or a concrete model)."""
    for key, value in headers:
        k = key.lower()
        for header, kind in ((VMODEL_HEADER, "vmodel"), (MODEL_HEADER, "model")):
            if k == header and isinstance(value, str):
                return kind, value
            if k == header + "-bin":
                raw = value.encode() if isinstance(value, str) else value
                try:
                    return kind, raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise errors.InvalidRequest(f"{k} is not UTF-8") from None
    name = wire.read_name(request)
    if not name:
        raise errors.InvalidRequest(
            "no model named: set model_name or the mm-vmodel-id / mm-model-id header"
        )
    return "any", name


def resolve(placement: table.PlacementTable, kind: str, name: str) -> str:
    """The concrete model id a requested name stands for."""
    if kind in ("vmodel", "any"):
        v = placement.vmodel(name)
        if v is not None:
            return v.active_model
        if kind == "vmodel":
            raise errors.ModelNotFound(name, "vmodel")
    if placement.model(name) is None:
        raise errors.ModelNotFound(name)
    return name


def _runtime_lost_model(e: UpstreamError) -> bool:
    """MLServer says NOT_FOUND, Triton INTERNAL 'unknown model'."""
    return e.code == "NOT_FOUND" or (e.code == "INTERNAL" and "unknown model" in e.details.lower())


class DataPlane:
    """Routes model-scoped calls to the local runtime, loading on demand."""

    def __init__(
        self,
        placement: table.PlacementTable,
        manager: cache_manager.CacheManager,
        upstream: Upstream,
        failure_expiry_ms: int,
    ) -> None:
        self._table = placement
        self._manager = manager
        self._upstream = upstream
        self._failure_expiry_ms = failure_expiry_ms

    async def call(
        self,
        method: str,
        request: bytes,
        headers: Sequence[tuple[str, str | bytes]],
        timeout: float | None,
    ) -> bytes:
        """Route one call; ``method`` is the short name (``ModelInfer``)."""
        kind, name = requested_id(request, headers)
        model_id = resolve(self._table, kind, name)
        forwarded = wire.rewrite_name(request, model_id)
        for attempt in range(2):
            async with self._manager.serving(model_id, timeout):
                try:
                    response = await self._upstream.call(method, forwarded, timeout)
                    break
                except UpstreamError as e:
                    if attempt == 0 and _runtime_lost_model(e):
                        self._manager.forget(model_id)
                        continue
                    if _runtime_lost_model(e):
                        raise errors.RuntimeUnavailable(
                            f"the runtime lost model {model_id!r}: {e.details}"
                        ) from None
                    raise
        if method in _NAMED_RESPONSES and name != model_id:
            response = wire.rewrite_name(response, name)
        return response

    def model_ready(self, request: bytes, headers: Sequence[tuple[str, str | bytes]]) -> bool:
        """``ModelReady``, answered by the mesh: a registered model is ready to
        serve (it loads on demand) unless its last load failed recently."""
        kind, name = requested_id(request, headers)
        model_id = resolve(self._table, kind, name)
        status = records.model_status(
            self._table.model(model_id), int(time.time() * 1000), self._failure_expiry_ms
        )
        return status is not records.ModelStatus.LOADING_FAILED
