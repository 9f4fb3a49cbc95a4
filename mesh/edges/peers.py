"""Connections from this node to its peers.

One gRPC channel per peer endpoint, shared by everything that talks to that
peer: the router forwarding V2 requests (through :meth:`Peers.channel`) and
the cache and management logic asking a peer to load a model
(:meth:`Peers.ensure_local`, the ``meshserve.peer.v1.Peer`` service). A peer
that cannot be reached raises :class:`mesh.core.errors.RuntimeUnavailable`; one
that refuses raises the mesh error its status stands for.

With TLS configured the channels are mutual TLS (:func:`mesh.edges.tls.channel_plan`
decides the files). When the certificate files change,
:meth:`Peers.use_credentials` swaps the credentials: calls made from then on
get new channels, and the old ones are closed once their calls have had
:data:`RETIRE_GRACE_SECONDS` to finish, so a rotation never cuts a request.
``max_message_bytes`` is the transport limit of each message: the node
passes ``MM_SVC_GRPC_MAX_MSG_SIZE`` plus the headroom its own rewrites of a
request may need, so that what a client may send always fits on this hop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from mesh.core import errors
from mesh.edges.proto import meshserve_peer_pb2 as peer_pb2
from mesh.edges.proto import meshserve_peer_pb2_grpc as peer_pb2_grpc

_FROM_STATUS: dict[grpc.StatusCode, type[errors.MeshError]] = {
    grpc.StatusCode.NOT_FOUND: errors.ModelLoadFailed,
    grpc.StatusCode.FAILED_PRECONDITION: errors.ModelLoadFailed,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.InsufficientCapacity,
    grpc.StatusCode.ABORTED: errors.Reroute,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
}


RETIRE_GRACE_SECONDS = 30.0
"""How long calls on a channel replaced by new credentials may still run."""


class Peers:
    """Channels to the other nodes, opened on first use.

    ``credentials`` (``grpc.ChannelCredentials``) make them TLS channels;
    ``options`` go with them (the name peers' certificates are checked
    against). ``max_message_bytes`` is the transport limit of each message.
    """

    def __init__(
        self,
        max_message_bytes: int,
        credentials: Any = None,
        options: list[tuple[str, str]] | None = None,
    ) -> None:
        self._base_options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._credentials = credentials
        self._options = self._base_options + list(options or ())
        self._channels: dict[str, Any] = {}
        self._retiring: dict[asyncio.Task[None], Any] = {}

    @property
    def secure(self) -> bool:
        return self._credentials is not None

    def channel(self, endpoint: str) -> Any:
        """The channel to ``endpoint`` (``host:port``)."""
        ch = self._channels.get(endpoint)
        if ch is None:
            if self._credentials is None:
                ch = grpc.aio.insecure_channel(endpoint, options=self._options)
            else:
                ch = grpc.aio.secure_channel(endpoint, self._credentials, options=self._options)
            self._channels[endpoint] = ch
        return ch

    def use_credentials(
        self, credentials: Any, options: list[tuple[str, str]] | None = None
    ) -> None:
        """New calls go over channels with ``credentials``; the current
        channels close once their calls are done (or after the grace)."""
        self._credentials = credentials
        self._options = self._base_options + list(options or ())
        old, self._channels = self._channels, {}
        for ch in old.values():
            task = asyncio.get_running_loop().create_task(ch.close(grace=RETIRE_GRACE_SECONDS))
            self._retiring[task] = ch
            task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def ensure_local(
        self,
        endpoint: str,
        model_id: str,
        *,
        extra_copy: bool = False,
        sync: bool = True,
        timeout: float | None = None,
    ) -> bool:
        """Ask the node at ``endpoint`` to load ``model_id``; ``True`` once
        it is loaded there (``sync``)."""
        stub = peer_pb2_grpc.PeerStub(self.channel(endpoint))
        try:
            reply = await stub.EnsureLocal(
                peer_pb2.EnsureLocalRequest(model_id=model_id, extra_copy=extra_copy, sync=sync),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise errors.RuntimeUnavailable(
                    f"peer {endpoint} is unavailable: {e.details()}"
                ) from None
            cls = _FROM_STATUS.get(e.code())
            if cls is errors.ModelLoadFailed:
                details = e.details() or ""
                raise errors.ModelLoadFailed(model_id, details, message=details) from None
            if cls is not None:
                raise cls(e.details() or e.code().name) from None
            raise errors.MeshError(f"peer {endpoint}: {e.code().name}: {e.details()}") from None
        return bool(reply.loaded)

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
        for task, ch in list(self._retiring.items()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await ch.close()
        self._retiring.clear()
