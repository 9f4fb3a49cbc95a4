"""Routing of a model-scoped V2 call, free of any transport.

For each ``ModelInfer`` / ``ModelMetadata`` / ``ModelConfig`` call:

1. find the id: header ``mm-vmodel-id`` / ``mm-model-id`` (or their ``-bin``
   UTF-8 forms), else field 1 of the request bytes;
2. resolve it: a vmodel (Predictor name) to its active concrete model, else a
   concrete model id; unknown → :class:`mesh.core.errors.ModelNotFound`;
3. rewrite field 1 to the concrete id and route it (:mod:`mesh.node.dispatch`):
   serve from this node's copy (loading it here if this node is chosen),
   forward to a peer's ready copy, forward to the peer chosen to load it, or
   wait for a copy loading elsewhere;
4. give the answer back with its name set to the name the caller used.

A forwarded request carries ``mm-balanced: true`` and the concrete id in
``mm-model-id``: the peer serves it from its own copy and never forwards it
again. A peer that cannot be reached, refuses the load (another node got the
claim, or it is shutting down) or fails to load is avoided and the decision
is made again (:class:`mesh.node.dispatch.Dispatcher`). If the local runtime says
it does not know the model (it restarted), the copy is forgotten and loaded
again. Every other runtime error is passed through with the runtime's status.

**Size limits.** A client may send and receive messages of up to
``MM_SVC_GRPC_MAX_MSG_SIZE`` bytes, checked here on the node it called, with a
``RESOURCE_EXHAUSTED`` that names the limit (:class:`MessageTooLarge`). The
hops inside the mesh (node → peer, node → runtime, and the runtime's own
limit) allow :data:`HEADROOM_BYTES` more (:func:`transport_limit`): replacing
a Predictor's name by its longer model id must never push a request that fit
the client's limit over an inner hop's.

**Streams.** ``ModelStreamInfer`` is routed like a call, once, on its first
message: the stream is pinned to one copy (this node's runtime, holding the
copy in use until the stream ends, or one peer, with ``mm-balanced``) and
every message goes there, each checked to name the same model and rewritten
to its id. Until the first answer, a copy that fails is replaced as a call's
would be; after it, the failure ends the stream. Answers are Triton's
``ModelStreamInferResponse`` (MLServer's bare ``ModelInferResponse`` answers are
wrapped, :data:`BARE_STREAM_ANSWERS`). A runtime that does not implement
streaming answers ``UNIMPLEMENTED``; the message names it.

**Payload log and log lines.** Every line logged while a call or stream is
routed names its model (:func:`mesh.node.logs.about_model`). With a payload
recorder (:mod:`mesh.edges.payload_log`), the node the client called hands it the
request and response bytes of ``ModelInfer`` and of each stream message; the
recorder never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from mesh.core import errors, placement, records, settings
from mesh.kv import placement_table, records_store
from mesh.node import cache_manager, dispatch, logs
from router import wire

log = logging.getLogger(__name__)

VMODEL_HEADER = "mm-vmodel-id"
MODEL_HEADER = "mm-model-id"
BALANCED_HEADER = "mm-balanced"
UNREACHABLE_HEADER = "mm-unreachable"
"""Instances the routing node could not reach: the peer's claim ignores their copies."""

# Methods whose response carries the model name in field 1.
_NAMED_RESPONSES = frozenset({"ModelInfer", "ModelMetadata"})
_LOGGED = frozenset({"ModelInfer", "ModelStreamInfer"})
STREAM_METHOD = "ModelStreamInfer"
_STREAM_RESPONSE_FIELD = 2
"""``ModelStreamInferResponse.infer_response``: the message holding the name."""
BARE_STREAM_ANSWERS = frozenset({"mlserver"})
"""Runtimes whose ``ModelStreamInfer`` answers ``ModelInferResponse`` messages
(MLServer's own ``dataplane.proto``) rather than the ``ModelStreamInferResponse``
of Triton's protocol, which ``tritonclient`` and the mesh's clients read. The
node serving such a runtime wraps each answer, so a stream has one protocol
whichever runtime is behind it."""

LIMIT_VARIABLE = "MM_SVC_GRPC_MAX_MSG_SIZE"
HEADROOM_BYTES = 64 * 1024
"""What a hop inside the mesh allows beyond the client's limit: room for the
rewrite of the model name (a model id is far shorter than this)."""

Headers = Sequence[tuple[str, str | bytes]]


def transport_limit(limit: int) -> int:
    """The gRPC message limit of the hops inside the mesh, for a client limit."""
    return limit + HEADROOM_BYTES


class MessageTooLarge(errors.InsufficientCapacity):
    """A request or response over ``MM_SVC_GRPC_MAX_MSG_SIZE``.

    A kind of :class:`mesh.core.errors.InsufficientCapacity` for its status:
    ``RESOURCE_EXHAUSTED`` is gRPC's code for both.
    """

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"{what} of {size} bytes is over the limit of {limit} bytes ({LIMIT_VARIABLE})"
        )
        self.size = size
        self.limit = limit


class StreamCutShort(errors.RuntimeUnavailable):
    """A stream ended by its target before the target's status could be read.

    grpcio's asyncio client replaces the status of a stream that the server
    ends while a message is being written with ``INTERNAL: Internal error
    from Core`` (grpc/grpc#36066), so an immediate ``UNIMPLEMENTED`` or
    ``NOT_FOUND`` can arrive as that. Nothing was answered, so the stream is
    opened again (:data:`REPLAY_MESSAGES`) until the real status shows.
    """


SETTLE_SECONDS = 0.05
"""After a stream was cut short, how long its next attempt waits for the
target to end the call before writing: a target that refuses at once
(``UNIMPLEMENTED``, ``NOT_FOUND``) is then heard without the race."""
CUT_SHORT_RETRIES = 5


class PayloadRecorder(Protocol):
    """Takes copies of payloads for the payload log; never waits, never raises
    (:class:`mesh.edges.payload_log.PayloadLogger`)."""

    def record(
        self,
        kind: str,
        request_id: str,
        method: str,
        name: str,
        model_id: str,
        data: bytes,
        sequence: int = 0,
    ) -> None: ...


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
        :class:`mesh.core.errors.RuntimeUnavailable` if the target is unreachable."""
        ...

    def stream(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
        *,
        settle: float = 0.0,
    ) -> AsyncIterator[bytes]:
        """A bidirectional stream: ``requests`` out, the answers back; errors
        as for :meth:`call`, and a :class:`mesh.core.errors.MeshError` raised by
        ``requests`` ends the stream with that error. With ``settle``, wait
        that long for the target to end the call before the first write; a
        status lost to grpcio's write race raises :class:`StreamCutShort`."""
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


def resolve(mirror: placement_table.PlacementTable, kind: str, name: str) -> str:
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


def _peer_error(e: UpstreamError, model_id: str) -> Exception:
    """A peer's status that means "try elsewhere", as the mesh error the
    dispatcher acts on; other statuses pass through."""
    if e.code == "ABORTED":
        return errors.Reroute(e.details)
    if e.code == "FAILED_PRECONDITION":
        return errors.ModelLoadFailed(model_id, e.details, message=e.details)
    if e.code == "UNAVAILABLE":
        return errors.RuntimeUnavailable(e.details)
    return e


def check_size(data: bytes, what: str, limit: int) -> None:
    """Raise :class:`MessageTooLarge` if ``data`` is over ``limit``."""
    if len(data) > limit:
        raise MessageTooLarge(what, len(data), limit)


def stream_message(data: bytes, asked: Requested, model_id: str, limit: int | None) -> bytes:
    """A later message of a stream, checked (same model, size) and addressed
    to ``model_id``."""
    name = wire.read_name(data)
    if name and name not in (asked.name, model_id):
        raise errors.InvalidRequest(
            f"a stream serves one model: it opened with {asked.name!r}, "
            f"a later request names {name!r}"
        )
    if limit is not None:
        check_size(data, "a request", limit)
    return wire.rewrite_name(data, model_id)


@dataclasses.dataclass
class _Target:
    """Where a stream is pinned."""

    upstream: Upstream
    metadata: Sequence[tuple[str, str]] = ()
    instance: str = ""
    """The peer's instance id; empty: this node's runtime."""
    bare_answers: bool = False
    """The runtime answers bare ``ModelInferResponse`` s (:data:`BARE_STREAM_ANSWERS`)."""


_END = object()
REPLAY_MESSAGES = 16
REPLAY_BYTES = 16 * 1024 * 1024
"""Until a stream's first answer, the messages sent so far (up to these
bounds, the first always) are kept, so that a copy that fails before
answering can be replaced by another that gets them all again."""


class _Stream:
    """One client stream: its first message, a queue of the later ones, and
    what has gone each way so far (which decides whether a failed copy may
    be replaced)."""

    def __init__(
        self,
        method: str,
        asked: Requested,
        model_id: str,
        first: bytes,
        limit: int,
        payloads: PayloadRecorder | None,
    ) -> None:
        self.method = method
        self.asked = asked
        self.model_id = model_id
        entry = not asked.balanced
        self._limit = limit if entry else None
        """The client's limit, checked on the node the client called only."""
        self._payloads = payloads if entry else None
        self._request_id = uuid.uuid4().hex if self._payloads is not None else ""
        self._later: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        self._sent = [wire.rewrite_name(first, model_id)]
        self._sent_bytes = 0
        self.replayable = True
        """No answer yet, and every message sent so far is kept: a failed copy
        may be replaced."""
        self.taken = 1
        """Client messages sent upstream (by any attempt), the first included."""
        self.answered = 0
        """Answers given to the client."""
        self.bytes_out = len(first)
        self.bytes_in = 0
        self._log("request", first, 0)

    def _log(self, kind: str, data: bytes, sequence: int) -> None:
        if self._payloads is not None:
            self._payloads.record(
                kind, self._request_id, self.method, self.asked.name, self.model_id, data, sequence
            )

    async def pump(self, requests: AsyncIterator[bytes]) -> None:
        """Read the client's later messages into the queue. One reader for
        every attempt: a queue loses nothing when an attempt's reader is
        cancelled, as a half-read stream would."""
        try:
            async for message in requests:
                await self._later.put(message)
        except Exception as e:  # the client's stream broke: end the upstream one with it
            await self._later.put(e)
            return
        await self._later.put(_END)

    async def outgoing(self) -> AsyncIterator[bytes]:
        """The messages for one attempt: those an earlier attempt sent, again,
        then the later ones."""
        for again in list(self._sent):
            yield again
        while True:
            message = await self._later.get()
            if message is _END or isinstance(message, Exception):
                self._later.put_nowait(message)  # for a later attempt's reader
                if isinstance(message, Exception):
                    raise message
                return
            assert isinstance(message, bytes)
            out = stream_message(message, self.asked, self.model_id, self._limit)
            self._log("request", message, self.taken)
            self.taken += 1
            self.bytes_out += len(message)
            if self.replayable:
                self._sent_bytes += len(out)
                if len(self._sent) < REPLAY_MESSAGES and self._sent_bytes <= REPLAY_BYTES:
                    self._sent.append(out)
                else:
                    self._forget_sent()
            yield out

    def _forget_sent(self) -> None:
        self.replayable = False
        self._sent.clear()

    def answer(self, response: bytes) -> bytes:
        """An answer as the client gets it: on the node the client called,
        checked and with the model named as the client named it."""
        if self._limit is not None:
            if self.asked.name != self.model_id:
                response = wire.rewrite_nested_name(
                    response, _STREAM_RESPONSE_FIELD, self.asked.name
                )
            check_size(response, f"a response of model {self.model_id!r}", self._limit)
            self._log("response", response, self.answered)
        if self.replayable:
            self._forget_sent()
        self.answered += 1
        self.bytes_in += len(response)
        return response


class DataPlane:
    """Routes model-scoped calls across the mesh, loading on demand."""

    def __init__(
        self,
        config: settings.Settings,
        mirror: placement_table.PlacementTable,
        record_store: records_store.RecordStore,
        manager: cache_manager.CacheManager,
        dispatcher: dispatch.Dispatcher,
        runtime: Upstream,
        peer: Callable[[str], Upstream],
        *,
        runtime_name: str = "runtime",
        payloads: PayloadRecorder | None = None,
    ) -> None:
        self._failure_expiry_ms = int(config.cache.failure_expiry_seconds * 1000)
        self._limit = config.service.max_message_bytes
        self._max_attempts = config.routing.max_attempts
        self._runtime_name = runtime_name
        self._payloads = payloads
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
        if not asked.balanced:
            check_size(request, "the request", self._limit)
        model_id = await self._resolve(asked)
        with logs.about_model(model_id):
            request_id = ""
            if self._payloads is not None and not asked.balanced and method in _LOGGED:
                request_id = uuid.uuid4().hex
                self._payloads.record("request", request_id, method, asked.name, model_id, request)
            response = await self._route(method, request, asked, model_id, timeout)
            if not asked.balanced:
                check_size(response, f"the response of model {model_id!r}", self._limit)
            if request_id and self._payloads is not None:
                self._payloads.record(
                    "response", request_id, method, asked.name, model_id, response
                )
            return response

    async def _resolve(self, asked: Requested) -> str:
        try:
            return resolve(self._table, asked.kind, asked.name)
        except errors.ModelNotFound:
            # Registered a moment ago through another node? This node's
            # mirror may lag etcd by a few milliseconds: catch up, once.
            await self._catch_up(asked)
            return resolve(self._table, asked.kind, asked.name)

    async def _route(
        self, method: str, request: bytes, asked: Requested, model_id: str, timeout: float | None
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
            # Out of the block: a copy in use is not forgotten.
            await self._forget(model_id)
        raise AssertionError("unreachable")

    async def _forget(self, model_id: str) -> None:
        """Drop this node's copy (the runtime lost it) so the next use loads
        it again; the unload starts before this returns."""
        self._manager.forget(model_id)
        await asyncio.sleep(0)

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
            raise _peer_error(e, model_id) from None
        finally:
            d.in_flight[instance_id] -= 1

    # --- streams ---------------------------------------------------------------------

    async def stream(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        headers: Headers,
        timeout: float | None,
    ) -> AsyncIterator[bytes]:
        """Route a bidirectional stream (``ModelStreamInfer``), pinned to one
        copy of the model its first message names."""
        first = await anext(aiter(requests), None)
        if first is None:
            return
        asked = requested(first, headers)
        if not asked.balanced:
            check_size(first, "the request", self._limit)
        model_id = await self._resolve(asked)
        s = _Stream(method, asked, model_id, first, self._limit, self._payloads)
        pumping = asyncio.create_task(s.pump(requests), name=f"stream-requests-{model_id}")
        try:
            with logs.about_model(model_id):
                async for response in self._stream_attempts(s, timeout):
                    yield response
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping

    async def _stream_attempts(self, s: _Stream, timeout: float | None) -> AsyncIterator[bytes]:
        """Open the stream on a copy; until the first answer (and while the
        messages sent so far are kept), a copy that fails is replaced and
        gets them again. A stream cut short (:class:`StreamCutShort`) is
        opened again on the same choice, waiting :data:`SETTLE_SECONDS` for
        an early status before writing, and does not count as a routing
        attempt."""
        attempt = cut_short = 0
        settle = 0.0
        while True:
            async with contextlib.AsyncExitStack() as stack:
                target = await self._pin(s.model_id, s.asked, timeout, stack)
                t0 = time.monotonic()
                lost = False
                try:
                    async for answer in target.upstream.stream(
                        s.method, s.outgoing(), timeout, target.metadata, settle=settle
                    ):
                        if target.bare_answers:
                            yield s.answer(wire.embed(answer, _STREAM_RESPONSE_FIELD))
                        else:
                            yield s.answer(answer)
                    if not target.instance:
                        ms = (time.monotonic() - t0) * 1000
                        self._manager.metrics.invoked(
                            s.method, s.model_id, ms, s.bytes_out, s.bytes_in
                        )
                    return
                except UpstreamError as e:
                    lost = not target.instance and _runtime_lost_model(e)
                    failure = self._stream_failure(e, target, s.model_id, s.method)
                except errors.RuntimeUnavailable as e:
                    failure = e
                if isinstance(failure, StreamCutShort):
                    cut_short += 1
                    settle = SETTLE_SECONDS
                    if not s.replayable or cut_short > CUT_SHORT_RETRIES:
                        raise failure
                    log.debug("stream of %s: %s; opening it again", s.model_id, failure)
                    continue
                gone = isinstance(failure, errors.RuntimeUnavailable)
                retryable = (
                    isinstance(failure, errors.Reroute | errors.ModelLoadFailed)
                    or (gone and bool(target.instance))
                    or lost
                )
                attempt += 1
                if not (retryable and s.replayable) or attempt >= self._max_attempts:
                    raise failure
                log.info(
                    "stream of %s on %s failed before answering (%s); opening it again",
                    s.model_id,
                    target.instance or "this node",
                    failure,
                )
                if gone and target.instance:
                    self._dispatcher.suspect(target.instance)
            if lost:  # out of the block: the copy is no longer in use
                await self._forget(s.model_id)

    async def _pin(
        self,
        model_id: str,
        asked: Requested,
        timeout: float | None,
        stack: contextlib.AsyncExitStack,
    ) -> _Target:
        """Choose the copy a stream goes to: hold this node's copy (loading it
        if this node is chosen) for as long as ``stack`` is open, or name the
        peer that holds (or will load) one."""

        async def here(unreachable: frozenset[str], remaining: float | None) -> _Target:
            await stack.enter_async_context(
                self._manager.serving(model_id, remaining, ignore=unreachable)
            )
            return _Target(self._runtime, bare_answers=self._runtime_name in BARE_STREAM_ANSWERS)

        if asked.balanced:
            return await here(asked.unreachable, timeout)

        async def there(
            route: placement.Route, unreachable: frozenset[str], remaining: float
        ) -> _Target:
            peer = self._table.instance(route.instance)
            if peer is None:
                raise errors.RuntimeUnavailable(f"node {route.instance} left the mesh")
            metadata = [(BALANCED_HEADER, "true"), (MODEL_HEADER, model_id)]
            if unreachable:
                metadata.append((UNREACHABLE_HEADER, ",".join(sorted(unreachable))))
            d = self._dispatcher
            d.in_flight[route.instance] = d.in_flight.get(route.instance, 0) + 1
            d.last_sent[route.instance] = time.monotonic()
            self.forwarded += 1

            def done() -> None:
                d.in_flight[route.instance] -= 1

            stack.callback(done)
            return _Target(self._peer(peer.endpoint), metadata, route.instance)

        return await self._dispatcher.run(model_id, timeout, here, there)

    def _stream_failure(
        self, e: UpstreamError, target: _Target, model_id: str, method: str
    ) -> Exception:
        if target.instance:
            return _peer_error(e, model_id)
        if e.code == "UNIMPLEMENTED":
            return UpstreamError(
                "UNIMPLEMENTED",
                f"model {model_id!r} is served by the {self._runtime_name} runtime, which does "
                f"not implement {method}: {e.details}",
            )
        if _runtime_lost_model(e):
            return errors.RuntimeUnavailable(f"the runtime lost model {model_id!r}: {e.details}")
        return e

    def model_ready(self, request: bytes, headers: Headers) -> bool:
        """``ModelReady``, answered by the mesh: a registered model is ready to
        serve (it loads on demand) unless its loads keep failing."""
        asked = requested(request, headers)
        model_id = resolve(self._table, asked.kind, asked.name)
        status = records.model_status(
            self._table.model(model_id), int(time.time() * 1000), self._failure_expiry_ms
        )
        return status is not records.ModelStatus.LOADING_FAILED
