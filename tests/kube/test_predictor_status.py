"""A Predictor's status from the placement table (:mod:`kube.predictor_status`),
with ModelMesh Serving's names and meanings."""

from __future__ import annotations

from kube import predictor_status as ps
from mesh.core import records

NOW = 1_800_000_000_000
EXPIRY = 60_000
ENDPOINTS = ps.endpoints("meshserve", "serving", 8033, 8008)
OLD, NEW = "p__ksp-old", "p__ksp-new"
Reason = ps.FailureReason


def _model(
    *copies: tuple[str, records.CopyState], failures: dict[str, int] | None = None
) -> records.ModelRecord:
    return records.ModelRecord(
        model_type="sklearn",
        path="m",
        copies={i: records.CopyInfo(state, NOW - 5000) for i, state in copies},
        failures={i: records.FailureInfo(t, f"boom on {i}") for i, t in (failures or {}).items()},
    )


LOADED = _model(("node-a", records.CopyState.LOADED), ("node-b", records.CopyState.LOADED))
LOADING = _model(("node-a", records.CopyState.LOADING))
IDLE = _model()


def _status(
    verdict: ps.Verdict,
    vmodel: records.VModelRecord | None,
    models: dict[str, records.ModelRecord],
) -> ps.PredictorStatus:
    return ps.predictor_status(
        verdict, vmodel, models, ENDPOINTS, now_ms=NOW, failure_expiry_ms=EXPIRY
    )


def test_before_registration_the_predictor_is_pending() -> None:
    s = _status(ps.Verdict(OLD), None, {})
    assert s.active_model_state is ps.ModelState.PENDING
    assert s.transition_status is ps.TransitionStatus.UP_TO_DATE
    assert not s.available and s.last_failure is None
    assert s.to_json()["grpcEndpoint"] == "grpc://meshserve.serving:8033"
    assert s.to_json()["httpEndpoint"] == "http://meshserve.serving:8008"


def test_a_settled_predictor_reports_its_model_state_and_copies() -> None:
    settled = records.VModelRecord(OLD, OLD, owner="predictor")
    s = _status(ps.Verdict(OLD), settled, {OLD: LOADED})
    assert (s.active_model_state, s.target_model_state) == (
        ps.ModelState.LOADED,
        ps.ModelState.NONE,
    )
    assert s.available and s.total_copies == 2 and s.failed_copies == 0
    assert s.to_json()["lastFailureInfo"] is None  # a merge patch removes it
    assert (
        _status(ps.Verdict(OLD), settled, {OLD: IDLE}).active_model_state is ps.ModelState.STANDBY
    )
    assert _status(ps.Verdict(OLD), settled, {OLD: IDLE}).available  # loads on the first request
    loading = _status(ps.Verdict(OLD), settled, {OLD: LOADING})
    # A request while it loads waits for the load (ModelMesh Serving's rule).
    assert loading.active_model_state is ps.ModelState.LOADING and loading.available


def test_a_transition_shows_both_models() -> None:
    moving = records.VModelRecord(OLD, NEW)
    s = _status(ps.Verdict(NEW), moving, {OLD: LOADED, NEW: LOADING})
    assert s.transition_status is ps.TransitionStatus.IN_PROGRESS
    assert s.active_model_state is ps.ModelState.LOADED and s.available
    assert s.target_model_state is ps.ModelState.LOADING


def test_a_failed_transition_is_blocked_and_names_the_failure() -> None:
    failed = _model(failures={"node-a": NOW - 1000, "node-b": NOW - 500})
    stuck = records.VModelRecord(OLD, NEW, failed=True)
    s = _status(ps.Verdict(NEW), stuck, {OLD: LOADED, NEW: failed})
    assert s.transition_status is ps.TransitionStatus.BLOCKED_BY_FAILED_LOAD
    assert s.target_model_state is ps.ModelState.FAILED_TO_LOAD
    assert s.available  # the old model still serves
    assert s.failed_copies == 2
    assert s.last_failure == ps.FailureInfo(
        Reason.MODEL_LOAD_FAILED, "boom on node-b", NEW, "node-b", NOW - 500
    )
    assert s.to_json()["lastFailureInfo"] == {
        "reason": "ModelLoadFailed",
        "message": "boom on node-b",
        "modelId": NEW,
        "location": "node-b",
        "time": ps.rfc3339(NOW - 500),
    }


def test_expired_failures_and_loaded_models_show_no_failure() -> None:
    old_failure = _model(failures={"node-a": NOW - 2 * EXPIRY})
    settled = records.VModelRecord(OLD, OLD)
    s = _status(ps.Verdict(OLD), settled, {OLD: old_failure})
    assert s.last_failure is None and s.active_model_state is ps.ModelState.STANDBY
    loaded_after_failure = _model(("node-b", records.CopyState.LOADED), failures={"node-a": NOW})
    s = _status(ps.Verdict(OLD), settled, {OLD: loaded_after_failure})
    assert s.last_failure is None and s.failed_copies == 1


def test_a_spec_not_registered_yet_is_in_progress() -> None:
    settled = records.VModelRecord(OLD, OLD)
    s = _status(ps.Verdict(NEW), settled, {OLD: LOADED})
    assert s.transition_status is ps.TransitionStatus.IN_PROGRESS
    assert s.target_model_state is ps.ModelState.PENDING
    assert s.active_model_state is ps.ModelState.LOADED


def test_an_invalid_spec_says_why_and_keeps_what_serves() -> None:
    why = ps.FailureInfo(
        Reason.NO_SUPPORTING_RUNTIME, "No ServingRuntime supports onnx", NEW, time_ms=NOW
    )
    s = _status(ps.Verdict(NEW, why), None, {})
    assert s.transition_status is ps.TransitionStatus.INVALID_SPEC
    assert s.active_model_state is ps.ModelState.PENDING and not s.available
    assert s.last_failure == why
    assert s.to_json()["lastFailureInfo"]["reason"] == "NoSupportingRuntime"
    # An older spec that was registered keeps serving.
    s = _status(ps.Verdict(NEW, why), records.VModelRecord(OLD, OLD), {OLD: LOADED})
    assert s.transition_status is ps.TransitionStatus.INVALID_SPEC
    assert s.available and s.active_model_state is ps.ModelState.LOADED
    unparsed = ps.Verdict(failure=ps.FailureInfo(Reason.INVALID_PREDICTOR_SPEC, "bad"))
    assert _status(unparsed, None, {}).transition_status is ps.TransitionStatus.INVALID_SPEC


def test_an_unreachable_mesh_is_a_failure_but_not_an_invalid_spec() -> None:
    why = ps.FailureInfo(Reason.RUNTIME_UNHEALTHY, "Waiting for the mesh", NEW, time_ms=NOW)
    s = _status(ps.Verdict(NEW, why), None, {})
    assert s.transition_status is ps.TransitionStatus.UP_TO_DATE
    assert s.last_failure == why and s.active_model_state is ps.ModelState.PENDING


def test_wants_load_for_new_specs_and_failures_only() -> None:
    settled = records.VModelRecord(OLD, OLD)

    def wants(
        vmodel: records.VModelRecord | None, model_id: str, model: records.ModelRecord
    ) -> bool:
        return ps.wants_load(vmodel, model_id, {OLD: model}, now_ms=NOW, failure_expiry_ms=EXPIRY)

    assert wants(None, OLD, IDLE)  # a new Predictor
    assert wants(settled, NEW, IDLE)  # a new spec
    assert not wants(settled, OLD, IDLE)  # standing by on purpose
    assert not wants(settled, OLD, LOADED)
    assert wants(settled, OLD, _model(failures={"node-a": NOW}))  # retry a failed load
    assert wants(records.VModelRecord(OLD, NEW, failed=True), NEW, LOADED)
