"""Routing of a model-scoped V2 call, free of any transport.

For each ``ModelInfer`` / ``ModelMetadata`` / ``ModelConfig`` call:

1. find the id: header ``mm-vmodel-id`` / ``mm-model-id`` (or their ``-bin``
   UTF-8 forms), else field 1 of the request bytes;
2. resolve it: a vmodel (Predictor name) to its active concrete model, else a
   concrete model id; unknown → :class:`mesh.errors.ModelNotFound`;
3. rewrite field 1 to the concrete id and route it (:mod:`mesh.dispatch`):
   serve from this node's copy (loading it here if this node is chosen),
   forward to a peer's ready copy, forward to the peer chosen to load it, or
   wait for a copy loading elsewhere;
4. give the answer back with its name set to the name the caller used.

A forwarded request carries ``mm-balanced: true`` and the concrete id in
``mm-model-id``: the peer serves it from its own copy and never forwards it
again. A peer that cannot be reached, refuses the load (another node got the
claim, or it is shutting down) or fails to load is avoided and the decision
is made again (:class:`mesh.dispatch.Dispatcher`). If the local runtime says
it does not know the model (it restarted), the copy is forgotten and loaded
again. Every other runtime error is passed through with the runtime's status.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from mesh import cache_manager, dispatch, errors, placement, records, settings, store, table
from router import wire

VMODEL_HEADER = "mm-vmodel-id"
MODEL_HEADER = "mm-model-id"
BALANCED_HEADER = "mm-balanced"
UNREACHABLE_HEADER = "mm-unreachable"
"""Instances the routing node could not reach: the peer's claim ignores their copies."""

# Methods whose response carries the model name in field 1.
_NAMED_RESPONSES = frozenset({"ModelInfer", "ModelMetadata"})

Headers = Sequence[tuple[str, str | bytes]]


@dataclasses.dataclass
class UpstreamError(Exception):
    """The runtime or peer answered with an error status (gRPC code name)."""

    code: str
    details: str


class Upstream(Protocol):
    """Sends raw request bytes to a runtime or peer, returns raw response bytes."""

    async def call(
        self,
        method: str,
        request: bytes,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """Raise :class:`UpstreamError` for an error status, and
        :class:`mesh.errors.RuntimeUnavailable` if the target is unreachable."""
        ...


@dataclasses.dataclass(frozen=True)
class Requested:
    """What a call asks for, read off its headers and bytes."""

    kind: str
    """``vmodel``, ``model`` or ``any`` (field 1: a vmodel or a concrete model)."""
    name: str
    balanced: bool = False
    """Sent by a peer: serve here, never forward."""
    unreachable: frozenset[str] = frozenset()


def _header(value: str | bytes, key: str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidRequest(f"{key} is not UTF-8") from None


def requested(request: bytes, headers: Headers) -> Requested:
    """The model a call names, and how it came."""
    found: tuple[str, str] | None = None
    balanced = False
    unreachable: frozenset[str] = frozenset()
    for key, value in headers:
        k = key.lower()
        if k in (VMODEL_HEADER, VMODEL_HEADER + "-bin") and found is None:
            found = ("vmodel", _header(value, k))
        elif k in (MODEL_HEADER, MODEL_HEADER + "-bin"):
            found = ("model", _header(value, k))  # wins: peers send it with the vmodel's
        elif k == BALANCED_HEADER:
            balanced = _header(value, k) == "true"
        elif k == UNREACHABLE_HEADER:
            unreachable = frozenset(x for x in _header(value, k).split(",") if x)
    if found is None:
        name = wire.read_name(request)
        if not name:
            raise errors.InvalidRequest(
                "no model named: set model_name or the mm-vmodel-id / mm-model-id header"
            )
        found = ("any", name)
    return Requested(found[0], found[1], balanced, unreachable)


def resolve(mirror: table.PlacementTable, kind: str, name: str) -> str:
    """The concrete model id a requested name stands for."""
    if kind in ("vmodel", "any"):
        v = mirror.vmodel(name)
        if v is not None:
            return v.active_model
        if kind == "vmodel":
            raise errors.ModelNotFound(name, "vmodel")
    if mirror.model(name) is None:
        raise errors.ModelNotFound(name)
    return name


def _runtime_lost_model(e: UpstreamError) -> bool:
    """MLServer says NOT_FOUND, Triton INTERNAL 'unknown model'."""
    return e.code == "NOT_FOUND" or (e.code == "INTERNAL" and "unknown model" in e.details.lower())


class DataPlane:
    """Routes model-scoped calls across the mesh, loading on demand."""

    def __init__(
        self,
        config: settings.Settings,
        mirror: table.PlacementTable,
        record_store: store.RecordStore,
        manager: cache_manager.CacheManager,
        dispatcher: dispatch.Dispatcher,
        runtime: Upstream,
        peer: Callable[[str], Upstream],
    ) -> None:
        self._failure_expiry_ms = int(config.cache.failure_expiry_seconds * 1000)
        self._table = mirror
        self._store = record_store
        self._manager = manager
        self._dispatcher = dispatcher
        self._runtime = runtime
        self._peer = peer
        self.forwarded = 0
        """Requests this node sent to a peer (for tests and metrics)."""

    async def call(
        self, method: str, request: bytes, headers: Headers, timeout: float | None
    ) -> bytes:
        """Route one call; ``method`` is the short name (``ModelInfer``)."""
        asked = requested(request, headers)
        try:
            model_id = resolve(self._table, asked.kind, asked.name)
        except errors.ModelNotFound:
            # Registered a moment ago through another node? This node's
            # mirror may lag etcd by a few milliseconds: catch up, once.
            await self._catch_up(asked)
            model_id = resolve(self._table, asked.kind, asked.name)
        forwarded = wire.rewrite_name(request, model_id)
        if asked.balanced:
            response = await self._serve_here(
                method, model_id, forwarded, timeout, asked.unreachable
            )
        else:

            async def here(unreachable: frozenset[str], remaining: float) -> bytes:
                return await self._serve_here(method, model_id, forwarded, remaining, unreachable)

            async def there(
                route: placement.Route, unreachable: frozenset[str], remaining: float
            ) -> bytes:
                return await self._forward(
                    route.instance, method, model_id, forwarded, remaining, unreachable
                )

            response = await self._dispatcher.run(model_id, timeout, here, there)
        if method in _NAMED_RESPONSES and asked.name != model_id:
            response = wire.rewrite_name(response, asked.name)
        return response

    async def _catch_up(self, asked: Requested) -> None:
        """Wait (briefly) for the mirror to show a record etcd already has."""
        found: tuple[object, int] | None = None
        if asked.kind in ("vmodel", "any"):
            found = await self._store.get_vmodel(asked.name)
        if found is None and asked.kind in ("model", "any"):
            found = await self._store.get_model(asked.name)
        if found is not None:
            await self._table.wait_for_revision(found[1], 2.0)

    async def _serve_here(
        self,
        method: str,
        model_id: str,
        request: bytes,
        timeout: float | None,
        unreachable: frozenset[str] = frozenset(),
    ) -> bytes:
        for attempt in range(2):
            async with self._manager.serving(model_id, timeout, ignore=unreachable):
                t0 = time.monotonic()
                try:
                    response = await self._runtime.call(method, request, timeout)
                    self._manager.metrics.invoked(
                        method,
                        model_id,
                        (time.monotonic() - t0) * 1000,
                        len(request),
                        len(response),
                    )
                    return response
                except UpstreamError as e:
                    if not _runtime_lost_model(e):
                        raise
                    if attempt == 1:
                        raise errors.RuntimeUnavailable(
                            f"the runtime lost model {model_id!r}: {e.details}"
                        ) from None
                    self._manager.forget(model_id)
        raise AssertionError("unreachable")

    async def _forward(
        self,
        instance_id: str,
        method: str,
        model_id: str,
        request: bytes,
        timeout: float,
        unreachable: frozenset[str],
    ) -> bytes:
        peer = self._table.instance(instance_id)
        if peer is None:
            raise errors.RuntimeUnavailable(f"node {instance_id} left the mesh")
        metadata = [(BALANCED_HEADER, "true"), (MODEL_HEADER, model_id)]
        if unreachable:
            metadata.append((UNREACHABLE_HEADER, ",".join(sorted(unreachable))))
        d = self._dispatcher
        d.in_flight[instance_id] = d.in_flight.get(instance_id, 0) + 1
        d.last_sent[instance_id] = time.monotonic()
        self.forwarded += 1
        try:
            return await self._peer(peer.endpoint).call(method, request, timeout, metadata)
        except UpstreamError as e:
            # The peer's mesh errors come back as statuses: those that mean
            # "try elsewhere" become mesh errors again for the dispatcher.
            if e.code == "ABORTED":
                raise errors.Reroute(e.details) from None
            if e.code == "FAILED_PRECONDITION":
                raise errors.ModelLoadFailed(model_id, e.details, message=e.details) from None
            if e.code == "UNAVAILABLE":
                raise errors.RuntimeUnavailable(e.details) from None
            raise
        finally:
            d.in_flight[instance_id] -= 1

    def model_ready(self, request: bytes, headers: Headers) -> bool:
        """``ModelReady``, answered by the mesh: a registered model is ready to
        serve (it loads on demand) unless its loads keep failing."""
        asked = requested(request, headers)
        model_id = resolve(self._table, asked.kind, asked.name)
        status = records.model_status(
            self._table.model(model_id), int(time.time() * 1000), self._failure_expiry_ms
        )
        return status is not records.ModelStatus.LOADING_FAILED
