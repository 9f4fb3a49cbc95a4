"""What the node a client called does with the client's messages and their
answers, and no other node does: check their size and form, and copy them to
the payload log.

**Size limits.** A client may send and receive messages of up to
``MM_SVC_GRPC_MAX_MSG_SIZE`` bytes, checked on the node it called, with a
``RESOURCE_EXHAUSTED`` that names the limit (:class:`MessageTooLarge`). The
hops inside the mesh (node → peer, node → runtime, and the runtime's own
limit) allow :data:`HEADROOM_BYTES` more (:func:`transport_limit`): replacing
a Predictor's name by its longer model id must never push a request that fit
the client's limit over an inner hop's.

**Form.** An inference request with an input given both as ``contents`` and
as raw data is refused (``INVALID_ARGUMENT``) before it is sent: Triton
refuses it, MLServer reads one of the two and answers. Only tags and lengths
are read (:func:`router.wire.input_in_both_forms`).

**Payload log.** With a payload recorder (:mod:`mesh.edges.payload_log`),
the node the client called hands it the request and response bytes of
``ModelInfer`` and of each stream message; the recorder never waits.
"""

from __future__ import annotations

from typing import Protocol

from mesh.core import errors
from router import wire

LIMIT_VARIABLE = "MM_SVC_GRPC_MAX_MSG_SIZE"
HEADROOM_BYTES = 64 * 1024
"""What a hop inside the mesh allows beyond the client's limit: room for the
rewrite of the model name (a model id is far shorter than this)."""


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


def check_size(data: bytes, what: str, limit: int) -> None:
    """Raise :class:`MessageTooLarge` if ``data`` is over ``limit``."""
    if len(data) > limit:
        raise MessageTooLarge(what, len(data), limit)


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


def refuse_mixed_forms(request: bytes) -> None:
    """Raise :class:`mesh.core.errors.InvalidRequest` for a ``ModelInfer``
    with an input given both as ``contents`` and as raw data."""
    name = wire.input_in_both_forms(request)
    if name is not None:
        raise errors.InvalidRequest(
            f"input {errors.shown(name)!r} is sent both as contents and as "
            "raw_input_contents: send one of the two"
        )
