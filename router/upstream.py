"""The hop the data plane sends bytes over, to this node's runtime or to a
peer, and what the hop's error statuses mean for routing.

The data plane works on raw V2 protobuf bytes and never touches a transport:
it is handed :class:`Upstream` objects (gRPC ones in :mod:`router.forward`,
synthetic ones in the load tests' simulation). A hop answers with bytes or
raises :class:`UpstreamError` with the target's gRPC status. Some of those
statuses mean something to the router: a peer's ``ABORTED``,
``FAILED_PRECONDITION`` or ``UNAVAILABLE`` mean "try another copy"
(:func:`peer_error` turns them back into the mesh errors the dispatcher acts
on), and a runtime's ``NOT_FOUND`` (Triton: ``INTERNAL`` "unknown model")
means it lost the model, for example after a restart
(:func:`runtime_lost_model`): the copy is forgotten and loaded again
(:func:`forget_lost_model`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from mesh.core import errors
from mesh.node import cache_manager
from router import wire


@dataclasses.dataclass
class UpstreamError(Exception):
    """The runtime or peer answered with an error status (gRPC code name)."""

    code: str
    details: str


class StreamCutShort(errors.RuntimeUnavailable):
    """A stream ended by its target before the target's status could be read.

    grpcio's asyncio client replaces the status of a stream that the server
    ends while a message is being written with ``INTERNAL: Internal error
    from Core`` (grpc/grpc#36066), so an immediate ``UNIMPLEMENTED`` or
    ``NOT_FOUND`` can arrive as that. Nothing was answered, so the stream is
    opened again (:data:`router.streams.REPLAY_MESSAGES`) until the real
    status shows.
    """


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


def runtime_lost_model(e: UpstreamError) -> bool:
    """MLServer says NOT_FOUND, Triton INTERNAL 'unknown model'."""
    return e.code == "NOT_FOUND" or (e.code == "INTERNAL" and "unknown model" in e.details.lower())


async def forget_lost_model(manager: cache_manager.CacheManager, model_id: str) -> None:
    """Drop this node's copy (the runtime lost it) so the next use loads
    it again; the unload starts before this returns."""
    manager.forget(model_id)
    await asyncio.sleep(0)


async def unknown_version(
    runtime: Upstream, model_id: str, request: bytes, timeout: float | None
) -> errors.UnknownVersion | None:
    """After the runtime said it has no such model (:func:`runtime_lost_model`)
    for a request that names a version: the error to answer if the model
    itself is ready there, so that the version is what is unknown and the
    copy is left alone (a client must not unload a healthy model by asking
    for a version it does not have); ``None`` if the runtime lost the model."""
    version = wire.read_version(request)
    if not version:
        return None
    try:
        ready = await runtime.call("ModelReady", wire.rewrite_name(b"", model_id), timeout)
    except UpstreamError:
        return None
    return errors.UnknownVersion(model_id, version) if wire.read_flag(ready, 1) else None


def peer_error(e: UpstreamError, model_id: str) -> Exception:
    """A peer's status that means "try elsewhere", as the mesh error the
    dispatcher acts on; other statuses pass through."""
    if e.code == "ABORTED":
        return errors.Reroute(e.details)
    if e.code == "FAILED_PRECONDITION":
        return errors.ModelLoadFailed(model_id, e.details, message=e.details)
    if e.code == "UNAVAILABLE":
        return errors.RuntimeUnavailable(e.details)
    return e
