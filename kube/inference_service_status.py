"""An InferenceService's ``status``, in the form KServe writes it for ModelMesh.

The states are a Predictor's (:mod:`kube.predictor_status` computes them from
the placement table); only the shape differs, and it is KServe's v1beta1
``InferenceServiceStatus`` as ModelMesh Serving fills it in, so ``kubectl get
inferenceservices`` (URL, READY), ``kubectl wait --for=condition=Ready`` and
scripts reading ``status.modelStatus`` work unchanged:

- ``modelStatus``: ``transitionStatus``, ``states.activeModelState`` /
  ``targetModelState``, ``copies.totalCopies`` / ``failedCopies`` and
  ``lastFailureInfo`` (``modelRevisionName`` where a Predictor says ``modelId``);
- ``url`` and ``components.predictor.{url,grpcUrl,restUrl}`` while the model
  can be served (the gRPC address is the URL, as in ModelMesh Serving), with
  ``traffic`` (each concrete model's percent, the latest marked: two during
  a canary rollout), ``latestCreatedRevision`` and ``latestRolledoutRevision``;
  ``components.transformer`` / ``explainer`` likewise when it has them;
- the conditions ``PredictorReady`` and ``Ready`` (which follows it), with the
  failure's reason and message when false, and the time the readiness last
  changed (so rewriting an unchanged status changes nothing).
Pure.
"""

from __future__ import annotations

from typing import Any

from kube import predictor_status

CONDITIONS = ("PredictorReady", "Ready")


def to_json(status: predictor_status.PredictorStatus, ready_since_ms: int) -> dict[str, Any]:
    """The ``status`` object for a merge patch: absent parts are ``None`` (a
    merge patch deletes them)."""
    failure = status.last_failure
    model_status: dict[str, Any] = {
        "transitionStatus": status.transition_status.value,
        "states": {
            "activeModelState": status.active_model_state.value,
            "targetModelState": status.target_model_state.value,
        },
        "copies": {"totalCopies": status.total_copies, "failedCopies": status.failed_copies},
        "lastFailureInfo": None if failure is None else _failure_json(failure),
    }
    ready = status.available
    since = predictor_status.rfc3339(ready_since_ms)
    conditions = []
    for kind in CONDITIONS:
        condition: dict[str, Any] = {
            "type": kind,
            "status": "True" if ready else "False",
            "lastTransitionTime": since,
        }
        if not ready and failure is not None:
            condition["reason"] = failure.reason.value
            condition["message"] = failure.message
        conditions.append(condition)
    endpoints = ready and status.grpc_endpoint
    return {
        "modelStatus": model_status,
        "conditions": conditions,
        "url": status.grpc_endpoint if endpoints else None,
        "components": {
            "predictor": _predictor_component(status) if endpoints else None,
            **{
                step: _chain_component(status, model_id) if endpoints and model_id else None
                for step, model_id in zip(("transformer", "explainer"), status.chain, strict=True)
            },
        },
    }


def _chain_component(status: predictor_status.PredictorStatus, model_id: str) -> dict[str, Any]:
    """``components.transformer`` / ``explainer``: called at the service's own
    address (the mesh walks the chain), with the step's model."""
    return {
        "url": status.grpc_endpoint,
        "grpcUrl": status.grpc_endpoint,
        "restUrl": status.http_endpoint,
        "latestCreatedRevision": model_id,
    }


def _predictor_component(status: predictor_status.PredictorStatus) -> dict[str, Any]:
    """``components.predictor``: where to call it, and (KServe's form of a
    rollout) each model's share of traffic, the latest one marked."""
    active = status.traffic[0][0] if status.traffic else ""
    return {
        "url": status.grpc_endpoint,
        "grpcUrl": status.grpc_endpoint,
        "restUrl": status.http_endpoint,
        "latestCreatedRevision": status.latest_model or None,
        "latestRolledoutRevision": active or None,
        "traffic": [
            {
                "revisionName": model_id,
                "percent": percent,
                "latestRevision": model_id == status.latest_model,
            }
            for model_id, percent in status.traffic
        ]
        or None,
    }


def _failure_json(failure: predictor_status.FailureInfo) -> dict[str, Any]:
    out = failure.to_json()
    model_id = out.pop("modelId", "")
    if model_id:
        out["modelRevisionName"] = model_id
    return out
