"""The gRPC upstreams: raw request bytes to a runtime's or a peer's V2
service, and back.

No protobuf decoding on either side: the channel's serializers are the
identity, so a request costs one write and one read of its bytes. An error
status becomes :class:`router.upstream.UpstreamError`, except a target that
cannot be reached, which is :class:`mesh.core.errors.RuntimeUnavailable`. A
message refused by a gRPC size limit on the hop (this channel's or the
target's) keeps its ``RESOURCE_EXHAUSTED`` and gets a message naming the hop,
the limit and ``MM_SVC_GRPC_MAX_MSG_SIZE`` (:func:`size_refusal`).

Streams (:meth:`GrpcUpstream.stream`) write and read concurrently, through
grpc.aio's ``write`` / ``read``: the writer is a task of its own, so a
message the mesh refuses (another model, too large) cancels the call and
ends the stream with that refusal rather than a bare ``CANCELLED``. grpc.aio
loses the status of a stream the target ends while a message is being
written (it reports ``INTERNAL: Internal error from Core``, grpc/grpc#36066);
that becomes :class:`router.upstream.StreamCutShort`, and the data plane
opens the stream again.

The runtime channel is plaintext (127.0.0.1, same pod); peer channels come
from :class:`mesh.edges.peers.Peers` (mutual TLS when configured), and
:class:`PeerUpstreams` follows it when it replaces a channel after a
certificate rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from mesh.core import errors
from mesh.edges import peers
from router import client_messages, upstream

SERVICE = "inference.GRPCInferenceService"
_STATUS_LOST = "Internal error from Core"
"""What grpcio's asyncio client reports, as ``INTERNAL``, for a stream the
server ended while a message was being written (grpc/grpc#36066)."""
_LARGER = re.compile(r"(?:Received|Sent) message larger than max \((\d+) vs\. (\d+)\)")


def size_refusal(details: str, target: str) -> str | None:
    """The message for gRPC's own size refusal on the hop to ``target``
    (``None`` if ``details`` is not one)."""
    m = _LARGER.search(details)
    if m is None:
        return None
    return (
        f"a message of {m.group(1)} bytes between this node and {target} is over that hop's "
        f"gRPC limit of {m.group(2)} bytes (set by {client_messages.LIMIT_VARIABLE} on each node, "
        "and by the runtime's own limit)"
    )


class GrpcUpstream:
    """Raw-bytes stubs over one channel (to a runtime or a peer node)."""

    def __init__(self, target: str, channel: Any) -> None:
        self.target = target
        self.channel = channel
        self._stubs: dict[str, Any] = {}
        self._stream_stubs: dict[str, Any] = {}

    @classmethod
    def open(cls, target: str, max_message_bytes: int) -> GrpcUpstream:
        """An upstream with a channel of its own (the local runtime)."""
        channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        return cls(target, channel)

    async def call(
        self,
        method: str,
        request: bytes,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        stub = self._stubs.get(method)
        if stub is None:
            stub = self._stubs[method] = self.channel.unary_unary(f"/{SERVICE}/{method}")
        try:
            response: bytes = await stub(request, timeout=timeout, metadata=tuple(metadata) or None)
            return response
        except grpc.aio.AioRpcError as e:
            raise self._error(e) from None

    def _error(self, e: Any) -> Exception:
        if e.code() == grpc.StatusCode.UNAVAILABLE:
            return errors.RuntimeUnavailable(f"{self.target} is unavailable: {e.details()}")
        details = e.details() or ""
        if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            details = size_refusal(details, self.target) or details
        return upstream.UpstreamError(e.code().name, details)

    async def stream(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
        *,
        settle: float = 0.0,
    ) -> AsyncIterator[bytes]:
        """A bidirectional stream of raw messages (see the module's docstring);
        with ``settle``, the first write waits that long for the target to end
        the call first (then nothing is written, and its status is read intact)."""
        stub = self._stream_stubs.get(method)
        if stub is None:
            stub = self._stream_stubs[method] = self.channel.stream_stream(f"/{SERVICE}/{method}")
        call = stub(timeout=timeout, metadata=tuple(metadata) or None)
        refused: list[Exception] = []
        writer = asyncio.create_task(
            _write_requests(call, requests, settle, refused), name=f"stream-to-{self.target}"
        )
        try:
            while True:
                try:
                    response = await call.read()
                except grpc.aio.AioRpcError as e:
                    if refused:
                        raise refused[0] from None
                    if e.code() == grpc.StatusCode.INTERNAL and e.details() == _STATUS_LOST:
                        raise upstream.StreamCutShort(
                            f"the stream to {self.target} ended before its status was read"
                        ) from None
                    raise self._error(e) from None
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if refused and task is not None and task.cancelling() == 0:
                        raise refused[0] from None
                    raise
                if response is grpc.aio.EOF:
                    return
                yield response
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            call.cancel()

    async def close(self) -> None:
        await self.channel.close()


_ENDED = (grpc.aio.AioRpcError, asyncio.InvalidStateError)
"""What a write into a call that has ended raises: the reader says how it ended."""


async def _write_requests(
    call: Any, requests: AsyncIterator[bytes], settle: float, refused: list[Exception]
) -> None:
    """The writer of a stream: ``requests`` into ``call``, then the end of
    writing. A message the mesh refuses (or the client's stream breaking) is
    kept in ``refused`` and cancels the call; with ``settle``, the first write
    waits that long for the target to end the call first."""
    if settle > 0:
        ended_early = asyncio.ensure_future(call.code())
        done, _ = await asyncio.wait({ended_early}, timeout=settle)
        if not done:
            ended_early.cancel()
        elif call.done():
            return
    messages = aiter(requests)
    while True:
        try:
            message = await anext(messages)
        except StopAsyncIteration:
            break
        except Exception as e:  # refused by the mesh, or the client's stream broke
            refused.append(e)
            call.cancel()
            return
        try:
            await call.write(message)
        except _ENDED:
            return
    with contextlib.suppress(*_ENDED):
        await call.done_writing()


class PeerUpstreams:
    """One :class:`GrpcUpstream` per peer node, over the shared peer channels."""

    def __init__(self, peer_channels: peers.Peers) -> None:
        self._peers = peer_channels
        self._upstreams: dict[str, GrpcUpstream] = {}

    def get(self, endpoint: str) -> GrpcUpstream:
        channel = self._peers.channel(endpoint)
        u = self._upstreams.get(endpoint)
        if u is None or u.channel is not channel:  # new channel: new credentials
            u = self._upstreams[endpoint] = GrpcUpstream(endpoint, channel)
        return u
