"""Streams (``ModelStreamInfer``), routed like a call, once, and then pinned.

A stream is routed on its first message, as :mod:`router.dataplane` routes a
call: the stream is pinned to one copy (this node's runtime, holding the
copy in use until the stream ends, or one peer, with ``mm-balanced``) and
every message goes there, each checked to name the same model and rewritten
to its id. Until the first answer, a copy that fails is replaced as a call's
would be, and gets the messages sent so far again (up to
:data:`REPLAY_MESSAGES` / :data:`REPLAY_BYTES`); after it, the failure ends
the stream. Answers are Triton's ``ModelStreamInferResponse`` (MLServer's
bare ``ModelInferResponse`` answers are wrapped, :data:`BARE_STREAM_ANSWERS`).
A runtime that does not implement streaming answers ``UNIMPLEMENTED``; the
message names it. On the node the client called, each message and answer is
size-checked and copied to the payload log (:mod:`router.client_messages`),
and every line logged names the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

from mesh.core import errors, placement, settings
from mesh.kv import placement_table
from mesh.node import cache_manager, dispatch, logs
from router import chains, client_messages, request_parsing, upstream, wire

log = logging.getLogger(__name__)

STREAM_METHOD = "ModelStreamInfer"
_STREAM_RESPONSE_FIELD = 2
"""``ModelStreamInferResponse.infer_response``: the message holding the name."""
BARE_STREAM_ANSWERS = frozenset({"mlserver"})
"""Runtimes whose ``ModelStreamInfer`` answers ``ModelInferResponse`` messages
(MLServer's own ``dataplane.proto``) rather than the ``ModelStreamInferResponse``
of Triton's protocol, which ``tritonclient`` and the mesh's clients read. The
node serving such a runtime wraps each answer, so a stream has one protocol
whichever runtime is behind it."""

SETTLE_SECONDS = 0.05
"""After a stream was cut short, how long its next attempt waits for the
target to end the call before writing: a target that refuses at once
(``UNIMPLEMENTED``, ``NOT_FOUND``) is then heard without the race."""
CUT_SHORT_RETRIES = 5


def stream_message(
    data: bytes, asked: request_parsing.Requested, model_id: str, limit: int | None
) -> bytes:
    """A later message of a stream, checked (same model, size) and addressed
    to ``model_id``."""
    name = wire.read_name(data)
    if name and name not in (asked.name, model_id):
        raise errors.InvalidRequest(
            f"a stream serves one model: it opened with {asked.name!r}, "
            f"a later request names {name!r}"
        )
    if limit is not None:  # the node the client called
        client_messages.check_size(data, "a request", limit)
        client_messages.refuse_mixed_forms(data)
    return wire.rewrite_name(data, model_id)


@dataclasses.dataclass
class _Target:
    """Where a stream is pinned."""

    upstream: upstream.Upstream
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
        asked: request_parsing.Requested,
        model_id: str,
        first: bytes,
        limit: int,
        payloads: client_messages.PayloadRecorder | None,
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
        self.first_request = self._sent[0]
        """The stream's first message, as sent (the version it names counts)."""
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
            client_messages.check_size(
                response, f"a response of model {self.model_id!r}", self._limit
            )
            self._log("response", response, self.answered)
        if self.replayable:
            self._forget_sent()
        self.answered += 1
        self.bytes_in += len(response)
        return response


class StreamRouter:
    """Routes the streams of one node (:meth:`stream`), over the same parts
    as its :class:`router.dataplane.DataPlane`."""

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
        self._limit = config.service.max_message_bytes
        self._max_attempts = config.routing.max_attempts
        self._runtime_name = runtime_name
        self._payloads = payloads
        self._table = mirror
        self._manager = manager
        self._dispatcher = dispatcher
        self._runtime = runtime
        self._peer = peer

    async def stream(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        headers: request_parsing.Headers,
        timeout: float | None,
    ) -> AsyncIterator[bytes]:
        """Route a bidirectional stream (``ModelStreamInfer``), pinned to one
        copy of the model its first message names."""
        first = await anext(aiter(requests), None)
        if first is None:
            return
        asked = request_parsing.requested(first, headers)
        if not asked.balanced:
            client_messages.check_size(first, "the request", self._limit)
            client_messages.refuse_mixed_forms(first)
        model_id = await request_parsing.resolve_current(self._table, asked)
        chains.refuse_stream(self._table, asked)
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
        gets them again. A stream cut short (:class:`router.upstream.StreamCutShort`) is
        opened again on the same choice, waiting :data:`SETTLE_SECONDS` for
        an early status before writing, and does not count as a routing
        attempt."""
        attempt = cut_short = 0
        settle = 0.0
        while True:
            async with contextlib.AsyncExitStack() as stack:
                target = await self._pin(s.model_id, s.asked, timeout, stack)
                lost = False
                try:
                    async for answer in self._relay(s, target, timeout, settle):
                        yield answer
                    return
                except upstream.UpstreamError as e:
                    lost = not target.instance and upstream.runtime_lost_model(e)
                    failure = self._stream_failure(e, target, s.model_id, s.method)
                    unknown = lost and await upstream.unknown_version(
                        self._runtime, s.model_id, s.first_request, timeout
                    )
                    if unknown:
                        raise unknown from None
                except errors.RuntimeUnavailable as e:
                    failure = e
                if isinstance(failure, upstream.StreamCutShort):
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
                await upstream.forget_lost_model(self._manager, s.model_id)

    async def _relay(
        self, s: _Stream, target: _Target, timeout: float | None, settle: float
    ) -> AsyncIterator[bytes]:
        """The target's answers, as the client reads them; a stream this
        node's runtime served to its end is timed like a call."""
        t0 = time.monotonic()
        async for answer in target.upstream.stream(
            s.method, s.outgoing(), timeout, target.metadata, settle=settle
        ):
            if target.bare_answers:
                yield s.answer(wire.embed(answer, _STREAM_RESPONSE_FIELD))
            else:
                yield s.answer(answer)
        if not target.instance:
            ms = (time.monotonic() - t0) * 1000
            self._manager.metrics.invoked(s.method, s.model_id, ms, s.bytes_out, s.bytes_in)

    async def _pin(
        self,
        model_id: str,
        asked: request_parsing.Requested,
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
            metadata = request_parsing.peer_metadata(model_id, unreachable)
            stack.enter_context(self._dispatcher.sending(route.instance))
            return _Target(self._peer(peer.endpoint), metadata, route.instance)

        return await self._dispatcher.run(model_id, timeout, here, there)

    def _stream_failure(
        self, e: upstream.UpstreamError, target: _Target, model_id: str, method: str
    ) -> Exception:
        if target.instance:
            return upstream.peer_error(e, model_id)
        if e.code == "UNIMPLEMENTED":
            return upstream.UpstreamError(
                "UNIMPLEMENTED",
                f"model {model_id!r} is served by the {self._runtime_name} runtime, which does "
                f"not implement {method}: {e.details}",
            )
        if upstream.runtime_lost_model(e):
            return errors.RuntimeUnavailable(f"the runtime lost model {model_id!r}: {e.details}")
        return e
