"""Routing of a unary model-scoped V2 call, free of any transport.

For each ``ModelInfer`` / ``ModelMetadata`` / ``ModelConfig`` call:

1. find the id (:mod:`router.request_parsing`): header ``mm-vmodel-id`` /
   ``mm-model-id``, else field 1 of the request bytes;
2. resolve it: a vmodel (Predictor name) to its active concrete model, else a
   concrete model id; unknown → :class:`mesh.core.errors.ModelNotFound`,
   once the mirror has caught up with the store;
3. rewrite field 1 to the concrete id and route it (:mod:`mesh.node.dispatch`):
   serve from this node's copy (loading it here if this node is chosen),
   forward to a peer's ready copy, forward to the peer chosen to load it, or
   wait for a copy loading elsewhere;
4. give the answer back with its name set to the name the caller used.

A ``ModelInfer`` for a vmodel with a transformer, or an explain call, walks
the vmodel's chain instead (:mod:`router.chains`), each step routed as above.

A forwarded request carries ``mm-balanced: true`` and the concrete id in
``mm-model-id``: the peer serves it from its own copy and never forwards it
again. A peer that cannot be reached, refuses the load (another node got the
claim, or it is shutting down) or fails to load is avoided and the decision
is made again (:class:`mesh.node.dispatch.Dispatcher`). If the local runtime says
it does not know the model (it restarted), the copy is forgotten and loaded
again. Every other runtime error is passed through with the runtime's status.

:class:`DataPlane` is the one object the edges (gRPC servicer, REST) call:
unary calls are routed here, streams by :class:`router.streams.StreamRouter`
over the same parts. On the node the client called, requests and answers are
size-checked and copied to the payload log (:mod:`router.client_messages`),
and every line logged while a call is routed names its model
(:func:`mesh.node.logs.about_model`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable

from mesh.core import clock, errors, placement, records, settings
from mesh.kv import placement_table
from mesh.node import cache_manager, dispatch, logs
from router import chains, client_messages, request_parsing, streams, upstream, wire

# Methods whose response carries the model name in field 1.
_NAMED_RESPONSES = frozenset({"ModelInfer", "ModelMetadata"})
_LOGGED = frozenset({"ModelInfer", "ModelStreamInfer"})


class DataPlane:
    """Routes model-scoped calls across the mesh, loading on demand."""

    def __init__(
        self,
        config: settings.Settings,
        mirror: placement_table.PlacementTable,
        manager: cache_manager.CacheManager,
        dispatcher: dispatch.Dispatcher,
        runtime: upstream.Upstream,
        peer: Callable[[str], upstream.Upstream],
        *,
        runtime_name: str = "runtime",
        payloads: client_messages.PayloadRecorder | None = None,
    ) -> None:
        self._failure_expiry_ms = int(config.cache.failure_expiry_seconds * 1000)
        self._limit = config.service.max_message_bytes
        self._payloads = payloads
        self._table = mirror
        self._manager = manager
        self._dispatcher = dispatcher
        self._runtime = runtime
        self._peer = peer
        self._streams = streams.StreamRouter(
            config,
            mirror,
            manager,
            dispatcher,
            runtime,
            peer,
            runtime_name=runtime_name,
            payloads=payloads,
        )
        self._chains = chains.ChainRunner(self._chain_step, manager.metrics)

    @property
    def forwarded(self) -> int:
        """Requests and streams this node sent to a peer (for tests and metrics)."""
        return self._dispatcher.forwarded

    async def call(
        self, method: str, request: bytes, headers: request_parsing.Headers, timeout: float | None
    ) -> bytes:
        """Route one call; ``method`` is the short name (``ModelInfer``)."""
        asked = request_parsing.requested(request, headers)
        if not asked.balanced:
            client_messages.check_size(request, "the request", self._limit)
            if method == "ModelInfer":
                client_messages.refuse_mixed_forms(request)
        model_id = await request_parsing.resolve_current(self._table, asked)
        chain = chains.chain_of(self._table, asked, method)
        with logs.about_model(model_id):
            request_id = ""
            if self._payloads is not None and not asked.balanced and method in _LOGGED:
                request_id = uuid.uuid4().hex
                self._payloads.record("request", request_id, method, asked.name, model_id, request)
            if chain is None:
                response = await self._route(method, request, asked, model_id, timeout)
            else:
                response = await self._chains.run(chain, asked, model_id, request, timeout)
            if not asked.balanced:
                client_messages.check_size(
                    response, f"the response of model {model_id!r}", self._limit
                )
            if request_id and self._payloads is not None:
                self._payloads.record(
                    "response", request_id, method, asked.name, model_id, response
                )
            return response

    async def _chain_step(self, model_id: str, request: bytes, timeout: float | None) -> bytes:
        """One step of a chain: a ``ModelInfer`` whose field 1 names its model."""
        asked = request_parsing.Requested("any", model_id)
        return await self._route("ModelInfer", request, asked, model_id, timeout)

    async def _route(
        self,
        method: str,
        request: bytes,
        asked: request_parsing.Requested,
        model_id: str,
        timeout: float | None,
    ) -> bytes:
        if asked.kind == "any" and asked.name == model_id:
            forwarded = request  # field 1 names the model already
        else:
            forwarded = wire.rewrite_name(request, model_id)
        if asked.balanced:
            try:
                response = await self._serve_here(
                    method, model_id, forwarded, timeout, asked.unreachable
                )
            except errors.InsufficientCapacity as e:
                # No room here (for now): the sending node tries another.
                raise errors.Reroute(e.message) from None
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
                except upstream.UpstreamError as e:
                    if not upstream.runtime_lost_model(e):
                        ms = (time.monotonic() - t0) * 1000
                        self._manager.metrics.invoke_failed(method, model_id, ms)
                        raise
                    unknown = await upstream.unknown_version(
                        self._runtime, model_id, request, timeout
                    )
                    if unknown is not None:
                        raise unknown from None
                    if attempt == 1:
                        raise errors.RuntimeUnavailable(
                            f"the runtime lost model {model_id!r}: {e.details}"
                        ) from None
            # Out of the block: a copy in use is not forgotten.
            await upstream.forget_lost_model(self._manager, model_id)
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
        metadata = request_parsing.peer_metadata(model_id, unreachable)
        with self._dispatcher.sending(instance_id):
            try:
                return await self._peer(peer.endpoint).call(method, request, timeout, metadata)
            except upstream.UpstreamError as e:
                # The peer's mesh errors come back as statuses: those that mean
                # "try elsewhere" become mesh errors again for the dispatcher.
                raise upstream.peer_error(e, model_id) from None

    def stream(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        headers: request_parsing.Headers,
        timeout: float | None,
    ) -> AsyncIterator[bytes]:
        """Route a bidirectional stream (``ModelStreamInfer``), pinned to one
        copy of the model its first message names (:mod:`router.streams`)."""
        return self._streams.stream(method, requests, headers, timeout)

    def model_ready(self, request: bytes, headers: request_parsing.Headers) -> bool:
        """``ModelReady``, answered by the mesh: a registered model is ready to
        serve (it loads on demand) unless its loads keep failing."""
        asked = request_parsing.requested(request, headers)
        model_id = request_parsing.resolve(self._table, asked.kind, asked.name)
        status = records.model_status(
            self._table.model(model_id), clock.now_ms(), self._failure_expiry_ms
        )
        return status is not records.ModelStatus.LOADING_FAILED
