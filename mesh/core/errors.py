"""The mesh's error tree.

Every failure a caller can see is one of these classes. Code inside the mesh
raises them; the gRPC edge (:mod:`mesh.edges.grpc_status`) maps each class to one
status code in a single table, so no handler picks status codes itself::

    MeshError
    ├── ConfigError             a setting or environment variable is invalid
    ├── InvalidRequest          the caller sent something malformed  → INVALID_ARGUMENT
    │   └── InvalidPredictor    a Predictor or InferenceService is wrong (names the field)
    ├── ModelNotFound           no model or vmodel with that id       → NOT_FOUND
    │   ├── UnknownModel        an inference call names nothing registered
    │   ├── UnknownVersion      the model is there, the version asked for is not
    │   └── NoExplainer         an explain call names a vmodel without an explainer
    ├── AlreadyExists           owner mismatch, id already taken      → ALREADY_EXISTS
    ├── ModelLoadFailed         the runtime (or puller) could not load → FAILED_PRECONDITION
    ├── InsufficientCapacity    the model cannot fit on this node      → RESOURCE_EXHAUSTED
    │   └── NoRoomNow           models loading or serving hold the room for now
    ├── NoSupportingRuntime     no node's runtime serves the model type → FAILED_PRECONDITION
    ├── RuntimeUnavailable      the runtime process does not answer    → UNAVAILABLE
    ├── StoreUnavailable        etcd does not answer                   → UNAVAILABLE
    ├── Conflict                a compare-and-set lost its race        → ABORTED
    │   └── Reroute             this node will not load the model now (another
    │                           node holds or loads it, or this one is draining):
    │                           the node that routed the request decides again
    └── DeadlineExceeded        the caller's deadline ran out          → DEADLINE_EXCEEDED

Errors from a runtime's own inference answer (bad tensor shapes and the like)
are not wrapped: the router passes the runtime's status and message through.
"""

from __future__ import annotations

SHOWN_NAME_LENGTH = 200
"""The most characters of a client's name an error message repeats."""


def shown(name: str) -> str:
    """``name`` for a message: cut to :data:`SHOWN_NAME_LENGTH` characters
    (saying how long it was), so a huge name cannot blow up a status
    message past what a client's metadata limit takes."""
    if len(name) <= SHOWN_NAME_LENGTH:
        return name
    return f"{name[:SHOWN_NAME_LENGTH]}… ({len(name)} characters)"


class MeshError(Exception):
    """Base of every error the mesh raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(MeshError):
    """A setting is missing or malformed; the message names the variable."""


class InvalidRequest(MeshError):
    """The caller sent something malformed; the message says what."""


class InvalidPredictor(InvalidRequest):
    """A Predictor (or InferenceService, ``kind``) document is not valid;
    ``field`` is its dotted path."""

    def __init__(self, field: str, problem: str, kind: str = "Predictor") -> None:
        super().__init__(f"{kind} field {field!r}: {problem}")
        self.field = field
        self.kind = kind


class ModelNotFound(MeshError):
    """No registered model or vmodel has this id."""

    def __init__(self, model_id: str, kind: str = "model") -> None:
        super().__init__(f"{kind} {shown(model_id)!r} is not registered")
        self.model_id = model_id


class UnknownModel(ModelNotFound):
    """A data-plane call names no registered model or vmodel. Worded as
    Triton words it (``Request for unknown model: 'x' is not found``), so
    scripts that match Triton's message keep working."""

    def __init__(self, name: str) -> None:
        MeshError.__init__(self, f"Request for unknown model: '{shown(name)}' is not found")
        self.model_id = name


class UnknownVersion(ModelNotFound):
    """The model is registered and its copy answers, but it has no version of
    the number the request names. Worded as Triton words it, so scripts that
    match Triton's message keep working."""

    def __init__(self, model_id: str, version: str) -> None:
        MeshError.__init__(
            self,
            f"Request for unknown model: '{shown(model_id)}' version {shown(version)} is not found",
        )
        self.model_id = model_id
        self.version = version


class NoExplainer(ModelNotFound):
    """An explain call names a model or vmodel that has no explainer."""

    def __init__(self, name: str) -> None:
        MeshError.__init__(
            self,
            f"{shown(name)!r} has no explainer: give its InferenceService a spec.explainer "
            "(or its Predictor the meshserve.io/explainer-uri annotation)",
        )
        self.model_id = name


class AlreadyExists(MeshError):
    """The id is taken by another owner or another definition."""


class ModelLoadFailed(MeshError):
    """Loading a model failed; the message carries the runtime's own words."""

    def __init__(self, model_id: str, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"model {model_id!r} failed to load: {reason}")
        self.model_id = model_id
        self.reason = reason


class InsufficientCapacity(MeshError):
    """A model does not fit even after evicting everything that may be evicted."""


class NoRoomNow(InsufficientCapacity):
    """The model would fit, but models loading or serving requests hold the
    room right now: not the model's fault, and over once they are done."""


class NoSupportingRuntime(MeshError):
    """No node in the mesh runs a runtime that serves the model's type."""


class RuntimeUnavailable(MeshError):
    """The model runtime process is not reachable or not ready."""


class StoreUnavailable(MeshError):
    """The KV store (etcd) is not reachable."""


class Conflict(MeshError):
    """A compare-and-set write lost to a concurrent writer too many times."""


class Reroute(Conflict):
    """This node will not load the model now: another node holds or is
    loading it, or this node is shutting down. The routing node retries."""


class DeadlineExceeded(MeshError):
    """The caller's deadline ran out before the model could serve."""
