"""gRPC health checking (``grpc.health.v1.Health``) on the node's :8033.

Kubernetes' gRPC probes (``livenessProbe.grpc`` / ``readinessProbe.grpc``),
``grpc_health_probe`` and load balancers ask this service whether a server
is serving. The node answers ``Check`` and ``Watch`` for the whole server
(``""``) and for each service it serves: SERVING while ``/ready`` would say
ready (its runtime answers and etcd is reachable), NOT_SERVING otherwise; a
service it does not serve is ``NOT_FOUND``, as the health protocol says.
The two messages have one field each, so they are written on the wire here
rather than with the ``grpcio-health-checking`` package (whose releases for
this gRPC need a newer protobuf than the runtimes accept).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

SERVICE = "grpc.health.v1.Health"
SERVING, NOT_SERVING = 1, 2
"""``HealthCheckResponse.ServingStatus`` values."""
WATCH_INTERVAL_SECONDS = 5.0
"""How often a ``Watch`` looks at the readiness again (it sends only changes)."""

Readiness = Callable[[], Awaitable[bool]]


def requested_service(request: bytes) -> str:
    """``HealthCheckRequest.service`` (field 1, its only field), ``""`` when
    absent or unreadable."""
    if not request.startswith(b"\x0a"):
        return ""
    length, shift, pos = 0, 0, 1
    while pos < len(request) and shift < 35:
        byte = request[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return request[pos : pos + length].decode("utf-8", "replace")
        shift += 7
    return ""


def status_message(status: int) -> bytes:
    """A ``HealthCheckResponse`` with ``status`` (field 1)."""
    return bytes([0x08, status])


class HealthService(grpc.GenericRpcHandler):  # type: ignore[misc]
    """``Check`` and ``Watch`` over the node's readiness."""

    def __init__(self, ready: Readiness, services: frozenset[str]) -> None:
        self._ready = ready
        self._services = services | {""}

    def service(self, handler_call_details: Any) -> Any:
        method = handler_call_details.method
        if method == f"/{SERVICE}/Check":
            return grpc.unary_unary_rpc_method_handler(self._check)
        if method == f"/{SERVICE}/Watch":
            return grpc.unary_stream_rpc_method_handler(self._watch)
        return None

    async def _status(self) -> int:
        return SERVING if await self._ready() else NOT_SERVING

    async def _check(self, request: bytes, context: Any) -> bytes:
        name = requested_service(request)
        if name not in self._services:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {name[:200]!r}")
        return status_message(await self._status())

    async def _watch(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        name = requested_service(request)
        if name not in self._services:
            yield status_message(3)  # SERVICE_UNKNOWN, as the protocol says for Watch
            return
        last = 0
        while True:
            status = await self._status()
            if status != last:
                yield status_message(status)
                last = status
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
