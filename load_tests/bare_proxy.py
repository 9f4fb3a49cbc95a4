"""The yardstick: a gRPC proxy with no logic at all, in the same Python and
grpc.aio as the mesh.

Why it exists: a mesh node is one extra Python gRPC hop in front of the
runtime, and that hop has a price of its own (a server read, a client write
and read, event-loop turns) that no routing logic can avoid. The overhead
scenario (``load_tests.overhead``) times three paths against one runtime:
direct, through this proxy, and through the mesh. The gap between direct
and this proxy is the floor of any Python hop; the gap between this proxy
and the mesh is what the mesh's own work costs.

Every unary call, whatever its service and method, is passed on unchanged:
the request's bytes, through a channel whose serializers are the identity,
to the same method on ``--target``, with the caller's deadline; the answer's
bytes, or its status code and details, come back as they are. No headers are
read or passed, nothing is decoded, nothing is logged per call.

Run it as its own process so that its CPU time can be measured alone::

    python -m load_tests.bare_proxy --listen 127.0.0.1:0 --target 127.0.0.1:8001

It prints ``listening on HOST:PORT`` once it accepts calls, and stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

_Handler = Callable[[bytes, Any], Coroutine[Any, Any, bytes]]


class _Forward(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Any unary method, passed on to the same method upstream."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._handlers: dict[str, Any] = {}

    def service(self, handler_call_details: Any) -> Any:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._handlers[method] = grpc.unary_unary_rpc_method_handler(
                self._forward(self._channel.unary_unary(method))
            )
        return handler

    @staticmethod
    def _forward(stub: Any) -> _Handler:
        async def handle(request: bytes, context: Any) -> bytes:
            try:
                response: bytes = await stub(request, timeout=context.time_remaining())
                return response
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details() or "")
                raise  # abort raises; this line is for the type checker

        return handle


class BareProxy:
    """The proxy server: :meth:`start` it on an event loop, :meth:`stop` it."""

    def __init__(self, listen: str, target: str) -> None:
        self.listen = listen
        self.target = target
        self.port = 0
        self._channel: Any = None
        self._server: Any = None

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target, options=_OPTIONS)
        self._server = grpc.aio.server(options=[*_OPTIONS, ("grpc.so_reuseport", 0)])
        self._server.add_generic_rpc_handlers([_Forward(self._channel)])
        self.port = self._server.add_insecure_port(self.listen)
        await self._server.start()

    @property
    def endpoint(self) -> str:
        host = self.listen.rpartition(":")[0] or "127.0.0.1"
        return f"{host}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
        if self._channel is not None:
            await self._channel.close()


async def _serve(listen: str, target: str) -> None:
    proxy = BareProxy(listen, target)
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {proxy.endpoint}", flush=True)
    try:
        await stop.wait()
    finally:
        await proxy.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m load_tests.bare_proxy",
        description="A raw-bytes grpc.aio proxy with no logic (the overhead yardstick).",
    )
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (0: any)")
    p.add_argument("--target", required=True, help="HOST:PORT to pass every call to")
    args = p.parse_args(argv)
    asyncio.run(_serve(args.listen, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
