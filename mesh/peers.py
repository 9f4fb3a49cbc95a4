"""Connections from this node to its peers.

One gRPC channel per peer endpoint, shared by everything that talks to that
peer: the router forwarding V2 requests (through :meth:`Peers.channel`) and
the cache and management logic asking a peer to load a model
(:meth:`Peers.ensure_local`, the ``meshserve.peer.v1.Peer`` service). A peer
that cannot be reached raises :class:`mesh.errors.RuntimeUnavailable`; one
that refuses raises the mesh error its status stands for.
"""

from __future__ import annotations

from typing import Any

import grpc

from mesh import errors
from mesh.proto import meshserve_peer_pb2 as peer_pb2
from mesh.proto import meshserve_peer_pb2_grpc as peer_pb2_grpc

_FROM_STATUS: dict[grpc.StatusCode, type[errors.MeshError]] = {
    grpc.StatusCode.NOT_FOUND: errors.ModelLoadFailed,
    grpc.StatusCode.FAILED_PRECONDITION: errors.ModelLoadFailed,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.InsufficientCapacity,
    grpc.StatusCode.ABORTED: errors.Reroute,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
}


class Peers:
    """Channels to the other nodes, opened on first use."""

    def __init__(self, max_message_bytes: int) -> None:
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._channels: dict[str, Any] = {}

    def channel(self, endpoint: str) -> Any:
        """The channel to ``endpoint`` (``host:port``)."""
        ch = self._channels.get(endpoint)
        if ch is None:
            ch = self._channels[endpoint] = grpc.aio.insecure_channel(
                endpoint, options=self._options
            )
        return ch

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
