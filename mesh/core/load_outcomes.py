"""What a load that ended without a model means, for its waiters and its record.

A load can end in the model's own fault (the runtime refused it, it took
longer than ``MESHSERVE_LOAD_TIMEOUT``, it is larger than the node): that is
recorded in the model's record as a failure on this node, so the next
request fails fast and the status says why. Or it can end in the node's
circumstances (the node is stopping, models in use hold the room for now):
that is not held against the model. This module turns the exception a load
ended with into the error its waiting requests get and that verdict; the
cache manager (:mod:`mesh.node.cache_manager`) writes the verdict.
"""

from __future__ import annotations

import dataclasses

from mesh.core import errors


@dataclasses.dataclass(frozen=True)
class FailedLoad:
    """The outcome of a load that raised."""

    error: errors.MeshError
    """What the requests waiting for the load are told."""
    blamed: bool
    """The model's fault: recorded as a failed load on this node."""
    unexpected: bool = False
    """Not an error the mesh raises on purpose (a bug worth a traceback)."""

    @property
    def message(self) -> str:
        """The words recorded and logged: the runtime's own for a failed load."""
        if isinstance(self.error, errors.ModelLoadFailed):
            return self.error.reason
        return self.error.message


def failed_load(
    e: BaseException, model_id: str, instance_id: str, load_timeout_seconds: float
) -> FailedLoad:
    """The outcome of a load of ``model_id`` on ``instance_id`` that raised
    ``e`` (an exception, or the cancellation of the load's task)."""
    unexpected = False
    if isinstance(e, errors.MeshError):
        err = e
    elif isinstance(e, TimeoutError):
        err = errors.ModelLoadFailed(model_id, f"load took longer than {load_timeout_seconds:g} s")
    elif not isinstance(e, Exception):  # cancelled: the node stopped the load
        err = errors.RuntimeUnavailable(f"node {instance_id} stopped loading {model_id!r}")
    else:
        err = errors.ModelLoadFailed(model_id, f"{type(e).__name__}: {e}")
        unexpected = True
    blamed = isinstance(err, errors.ModelLoadFailed) or (
        isinstance(err, errors.InsufficientCapacity) and not isinstance(err, errors.NoRoomNow)
    )
    return FailedLoad(err, blamed, unexpected)
