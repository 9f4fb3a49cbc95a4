"""The gRPC upstream: raw request bytes to a runtime's V2 service and back.

No protobuf decoding on either side: the channel's serializers are the
identity, so a request costs one write and one read of its bytes. An error
status becomes :class:`router.dataplane.UpstreamError`, except a runtime that
cannot be reached, which is :class:`mesh.errors.RuntimeUnavailable`.
"""

from __future__ import annotations

from typing import Any

import grpc

from mesh import errors
from router import dataplane

SERVICE = "inference.GRPCInferenceService"


class GrpcUpstream:
    """A channel to one runtime, with one raw-bytes stub per method."""

    def __init__(self, target: str, max_message_bytes: int) -> None:
        self.target = target
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        self._stubs: dict[str, Any] = {}

    async def call(self, method: str, request: bytes, timeout: float | None) -> bytes:
        stub = self._stubs.get(method)
        if stub is None:
            stub = self._stubs[method] = self._channel.unary_unary(f"/{SERVICE}/{method}")
        try:
            response: bytes = await stub(request, timeout=timeout)
            return response
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise errors.RuntimeUnavailable(
                    f"runtime at {self.target} is unavailable: {e.details()}"
                ) from None
            raise dataplane.UpstreamError(e.code().name, e.details() or "") from None

    async def close(self) -> None:
        await self._channel.close()
