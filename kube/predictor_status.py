"""A Predictor's status, as KServe ModelMesh Serving reports it, from the placement table.

The controller writes ``status`` of every Predictor it manages from etcd watch
events: each change to the Predictor's vmodel or to one of its concrete models
recomputes :func:`predictor_status`, and the result is patched when it
differs from what was written last. Keeping the computation here, a pure
function of the records and of the controller's own verdict on the spec,
means the status never depends on when the controller happened to look, and
every rule below is tested without etcd or an API server.

The fields and their values are ModelMesh Serving's, so tooling written for
it (``kubectl get predictors``, scripts waiting for ``Loaded``) works unchanged:

- ``activeModelState``: the model serving requests now — ``Pending`` before it
  is registered, ``Standby`` (registered, loaded nowhere: the first request
  loads it), ``Loading``, ``Loaded``, ``FailedToLoad``.
- ``targetModelState``: while the spec asks for another model than the active
  one, that model's state (``Pending`` until the controller has registered
  it); empty otherwise.
- ``transitionStatus``: ``UpToDate``, ``InProgress`` (the target is loading),
  ``BlockedByFailedLoad`` (it failed; the old model keeps serving), or
  ``InvalidSpec`` (the spec cannot be served: it does not parse, or no runtime
  supports it — nothing was registered for it).
- ``available``: requests for the Predictor can be served now: the active
  model is loaded, loading (a request waits for it) or registered and
  loadable on demand (``Standby``), as ModelMesh Serving has it; so an
  InferenceService's ``Ready`` does not flicker off while its first copy loads.
- ``lastFailureInfo``: why the spec is invalid; or the latest recorded load
  failure (node, message, time) of the model being brought up while it is not
  loaded; or ``RuntimeUnhealthy`` while the controller cannot reach the
  mesh to register the spec. Absent when there is none.
- ``totalCopies`` / ``failedCopies``: loaded copies of the active model; nodes
  where the model being brought up failed to load recently.
- ``grpcEndpoint`` / ``httpEndpoint``: where clients send requests.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable, Mapping
from typing import Any

from mesh.core import records, traffic_split


class TransitionStatus(enum.StrEnum):
    UP_TO_DATE = "UpToDate"
    IN_PROGRESS = "InProgress"
    BLOCKED_BY_FAILED_LOAD = "BlockedByFailedLoad"
    INVALID_SPEC = "InvalidSpec"


class ModelState(enum.StrEnum):
    NONE = ""
    PENDING = "Pending"
    STANDBY = "Standby"
    LOADING = "Loading"
    LOADED = "Loaded"
    FAILED_TO_LOAD = "FailedToLoad"


class FailureReason(enum.StrEnum):
    MODEL_LOAD_FAILED = "ModelLoadFailed"
    RUNTIME_UNHEALTHY = "RuntimeUnhealthy"
    NO_SUPPORTING_RUNTIME = "NoSupportingRuntime"
    RUNTIME_NOT_RECOGNIZED = "RuntimeNotRecognized"
    INVALID_PREDICTOR_SPEC = "InvalidPredictorSpec"


INVALID_SPEC_REASONS = frozenset(
    {
        FailureReason.NO_SUPPORTING_RUNTIME,
        FailureReason.RUNTIME_NOT_RECOGNIZED,
        FailureReason.INVALID_PREDICTOR_SPEC,
    }
)
"""Failures that make the spec itself unservable: ``InvalidSpec``."""

MODEL_STATES: Mapping[records.ModelStatus, ModelState] = {
    records.ModelStatus.NOT_FOUND: ModelState.PENDING,
    records.ModelStatus.NOT_LOADED: ModelState.STANDBY,
    records.ModelStatus.LOADING: ModelState.LOADING,
    records.ModelStatus.LOADED: ModelState.LOADED,
    records.ModelStatus.LOADING_FAILED: ModelState.FAILED_TO_LOAD,
}
"""A model's status in the placement table → its state in a Predictor's status
(the controller's, and the CLI's by the status's name in the gRPC API)."""


@dataclasses.dataclass(frozen=True)
class FailureInfo:
    """``status.lastFailureInfo``."""

    reason: FailureReason
    message: str
    model_id: str = ""
    location: str = ""
    """The node (instance id, the pod's name) where a load failed."""
    time_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason.value, "message": self.message}
        if self.model_id:
            out["modelId"] = self.model_id
        if self.location:
            out["location"] = self.location
        if self.time_ms:
            out["time"] = rfc3339(self.time_ms)
        return out


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the controller concluded from a Predictor's spec when it last
    reconciled it: the concrete model id the spec asks for, and a failure if
    the spec cannot be registered (invalid, no runtime, mesh unreachable)."""

    model_id: str = ""
    """``PredictorSpec.model_id``; empty when the spec does not parse."""
    failure: FailureInfo | None = None

    @property
    def invalid(self) -> bool:
        return self.failure is not None and self.failure.reason in INVALID_SPEC_REASONS


@dataclasses.dataclass(frozen=True)
class Endpoints:
    grpc: str = ""
    http: str = ""


def endpoints(service: str, namespace: str, grpc_port: int, http_port: int) -> Endpoints:
    """The Service's in-cluster addresses, as ModelMesh Serving writes them."""
    host = f"{service}.{namespace}"
    return Endpoints(grpc=f"grpc://{host}:{grpc_port}", http=f"http://{host}:{http_port}")


@dataclasses.dataclass(frozen=True)
class PredictorStatus:
    """``status`` of a Predictor."""

    available: bool
    transition_status: TransitionStatus
    active_model_state: ModelState
    target_model_state: ModelState = ModelState.NONE
    last_failure: FailureInfo | None = None
    total_copies: int = 0
    failed_copies: int = 0
    grpc_endpoint: str = ""
    http_endpoint: str = ""
    traffic: tuple[tuple[str, int], ...] = ()
    """Each concrete model's share of requests now, in percent (a canary
    rollout has two); the active model first. Not in a Predictor's
    ``status`` (ModelMesh Serving's schema has no field for it); an
    InferenceService shows it as KServe does."""
    latest_model: str = ""
    """The model the spec asks for (the target): KServe's latest revision."""
    chain: tuple[str, str] = ("", "")
    """The vmodel's transformer and explainer models (empty: none); an
    InferenceService shows them as KServe's ``components``."""

    def to_json(self) -> dict[str, Any]:
        """The ``status`` object; ``lastFailureInfo`` is ``None`` (a merge
        patch deletes it) when there is no failure."""
        return {
            "available": self.available,
            "transitionStatus": self.transition_status.value,
            "activeModelState": self.active_model_state.value,
            "targetModelState": self.target_model_state.value,
            "lastFailureInfo": None if self.last_failure is None else self.last_failure.to_json(),
            "totalCopies": self.total_copies,
            "failedCopies": self.failed_copies,
            "grpcEndpoint": self.grpc_endpoint,
            "httpEndpoint": self.http_endpoint,
        }


def rfc3339(ms: int) -> str:
    """``2026-11-25T10:00:00Z`` (metav1.Time has second precision)."""
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def model_state(
    record: records.ModelRecord | None, now_ms: int, failure_expiry_ms: int
) -> ModelState:
    return MODEL_STATES[records.model_status(record, now_ms, failure_expiry_ms)]


def _load_failure(
    model_id: str, record: records.ModelRecord | None, now_ms: int, failure_expiry_ms: int
) -> FailureInfo | None:
    """The latest recent load failure of a model that is not loaded."""
    if record is None or model_state(record, now_ms, failure_expiry_ms) is ModelState.LOADED:
        return None
    failures = records.recent_failures(record, now_ms, failure_expiry_ms)
    if not failures:
        return None
    where, latest = max(failures.items(), key=lambda kv: (kv[1].time_ms, kv[0]))
    return FailureInfo(
        reason=FailureReason.MODEL_LOAD_FAILED,
        message=latest.message,
        model_id=model_id,
        location=where,
        time_ms=latest.time_ms,
    )


def predictor_status(
    verdict: Verdict,
    vmodel: records.VModelRecord | None,
    models: Mapping[str, records.ModelRecord],
    service: Endpoints,
    *,
    now_ms: int,
    failure_expiry_ms: int,
) -> PredictorStatus:
    """The status of a Predictor whose vmodel record is ``vmodel`` (``None``:
    not registered), given the model records and the controller's verdict."""

    def state(model_id: str) -> ModelState:
        return model_state(models.get(model_id), now_ms, failure_expiry_ms)

    active_state = ModelState.PENDING if vmodel is None else state(vmodel.active_model)
    target_state = ModelState.NONE
    transition = TransitionStatus.UP_TO_DATE
    rising = ""  # the model being brought up (the target, else the active one)
    if vmodel is not None:
        rising = vmodel.target_model
        if verdict.model_id and verdict.model_id != vmodel.target_model:
            # The spec changed and its model is not registered yet.
            transition = TransitionStatus.IN_PROGRESS
            if verdict.model_id != vmodel.active_model:
                target_state = ModelState.PENDING
            rising = verdict.model_id
        elif vmodel.transitioning:
            transition = (
                TransitionStatus.BLOCKED_BY_FAILED_LOAD
                if vmodel.failed
                else TransitionStatus.IN_PROGRESS
            )
            target_state = state(vmodel.target_model)
    failure = verdict.failure
    if verdict.invalid:
        transition = TransitionStatus.INVALID_SPEC
    elif failure is None and rising:
        failure = _load_failure(rising, models.get(rising), now_ms, failure_expiry_ms)
    active = models.get(vmodel.active_model) if vmodel is not None else None
    rising_record = models.get(rising) if rising else None
    return PredictorStatus(
        available=active_state in (ModelState.LOADED, ModelState.LOADING, ModelState.STANDBY),
        transition_status=transition,
        active_model_state=active_state,
        target_model_state=target_state,
        last_failure=failure,
        total_copies=_loaded_copies(active),
        failed_copies=len(records.recent_failures(rising_record, now_ms, failure_expiry_ms))
        if rising_record is not None
        else 0,
        grpc_endpoint=service.grpc,
        http_endpoint=service.http,
        traffic=_traffic(vmodel, state),
        latest_model=vmodel.target_model if vmodel is not None else "",
        chain=(vmodel.transformer, vmodel.explainer) if vmodel is not None else ("", ""),
    )


def _loaded_copies(record: records.ModelRecord | None) -> int:
    copies = record.copies.values() if record is not None else ()
    return sum(1 for c in copies if c.state is records.CopyState.LOADED)


def _traffic(
    vmodel: records.VModelRecord | None, state: Callable[[str], ModelState]
) -> tuple[tuple[str, int], ...]:
    if vmodel is None:
        return ()
    ready = state(vmodel.target_model) is ModelState.LOADED
    return tuple(traffic_split.traffic(vmodel, target_ready=ready).items())


def wants_load(
    vmodel: records.VModelRecord | None,
    model_id: str,
    models: Mapping[str, records.ModelRecord],
    *,
    now_ms: int,
    failure_expiry_ms: int,
) -> bool:
    """Whether registering a spec whose concrete model is ``model_id`` should
    also load it now, as ModelMesh Serving does: for a new Predictor or a new
    spec, or to retry a model that failed. A controller that starts (or takes
    over) registers every Predictor again, and must not load the models that
    sit unloaded on purpose (``Standby``)."""
    if vmodel is None or vmodel.target_model != model_id or vmodel.failed:
        return True
    state = model_state(models.get(vmodel.active_model), now_ms, failure_expiry_ms)
    return state is ModelState.FAILED_TO_LOAD
