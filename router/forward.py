"""The gRPC upstreams: raw request bytes to a runtime's or a peer's V2
service, and back.

No protobuf decoding on either side: the channel's serializers are the
identity, so a request costs one write and one read of its bytes. An error
status becomes :class:`router.dataplane.UpstreamError`, except a target that
cannot be reached, which is :class:`mesh.errors.RuntimeUnavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from mesh import errors, peers
from router import dataplane

SERVICE = "inference.GRPCInferenceService"


class GrpcUpstream:
    """Raw-bytes stubs over one channel (to a runtime or a peer node)."""

    def __init__(self, target: str, channel: Any) -> None:
        self.target = target
        self._channel = channel
        self._stubs: dict[str, Any] = {}

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
            stub = self._stubs[method] = self._channel.unary_unary(f"/{SERVICE}/{method}")
        try:
            response: bytes = await stub(request, timeout=timeout, metadata=tuple(metadata) or None)
            return response
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise errors.RuntimeUnavailable(
                    f"{self.target} is unavailable: {e.details()}"
                ) from None
            raise dataplane.UpstreamError(e.code().name, e.details() or "") from None

    async def close(self) -> None:
        await self._channel.close()


class PeerUpstreams:
    """One :class:`GrpcUpstream` per peer node, over the shared peer channels."""

    def __init__(self, peer_channels: peers.Peers) -> None:
        self._peers = peer_channels
        self._upstreams: dict[str, GrpcUpstream] = {}

    def get(self, endpoint: str) -> GrpcUpstream:
        u = self._upstreams.get(endpoint)
        if u is None:
            u = self._upstreams[endpoint] = GrpcUpstream(endpoint, self._peers.channel(endpoint))
        return u
