"""KServe's InferenceService CRD, for clusters without KServe: structural,
KServe's names and columns, ModelMesh Serving's example InferenceServices
valid against it, and the status the controller writes valid too. It is
installed by the quickstart only: applied over KServe's own CRD it would
replace KServe's schema."""

from __future__ import annotations

from typing import Any

import pytest

from kube import inference_service_status, predictor_status
from tests.deploy import manifests
from tests.deploy.manifests import Obj, Rendered
from tests.deploy.test_custom_resources import _structural_problems, validation_errors
from tests.kube import test_inference_service as examples

EXAMPLES = {
    "new-form-key-path": examples.NEW_FORM_KEY_PATH,
    "old-form-s3": examples.OLD_FORM_S3,
    "new-form-s3": examples.NEW_FORM_S3,
    "https": examples.HTTPS,
    "pvc-uri": examples.PVC_URI,
    "pvc-path": examples.PVC_PATH,
}


def _version(crds: dict[str, Obj]) -> Obj:
    versions: list[Obj] = crds["InferenceService"]["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def test_it_is_kserves_kind_version_names_and_columns(crds: dict[str, Obj]) -> None:
    crd = crds["InferenceService"]
    assert crd["metadata"]["name"] == "inferenceservices.serving.kserve.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["isvc"]
    version = _version(crds)
    assert (version["name"], version["served"], version["storage"]) == ("v1beta1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "URL": ".status.url",
        "Ready": ".status.conditions[?(@.type=='Ready')].status",
        "Age": ".metadata.creationTimestamp",
    }
    schema = version["schema"]["openAPIV3Schema"]
    assert list(_structural_problems(schema, "", False)) == []


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_modelmesh_servings_example_inference_services_validate_unchanged(
    crds: dict[str, Obj], name: str
) -> None:
    assert validation_errors(crds, manifests.load(EXAMPLES[name])) == []


def _written(status: predictor_status.PredictorStatus) -> dict[str, Any]:
    """The status as a merge patch leaves it (``None`` deletes)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v is not None}
        return value

    out: dict[str, Any] = strip(inference_service_status.to_json(status, 1_764_000_000_000))
    return out


@pytest.mark.parametrize(
    "status",
    [
        predictor_status.PredictorStatus(
            available=True,
            transition_status=predictor_status.TransitionStatus.UP_TO_DATE,
            active_model_state=predictor_status.ModelState.LOADED,
            total_copies=1,
            grpc_endpoint="grpc://meshserve.meshserve:8033",
            http_endpoint="http://meshserve.meshserve:8008",
        ),
        predictor_status.PredictorStatus(
            available=False,
            transition_status=predictor_status.TransitionStatus.INVALID_SPEC,
            active_model_state=predictor_status.ModelState.PENDING,
            last_failure=predictor_status.FailureInfo(
                predictor_status.FailureReason.NO_SUPPORTING_RUNTIME,
                "no runtime supports lightgbm",
                "m__ksp-0123456789",
                time_ms=1_764_000_000_000,
            ),
        ),
        predictor_status.PredictorStatus(
            available=True,
            transition_status=predictor_status.TransitionStatus.UP_TO_DATE,
            active_model_state=predictor_status.ModelState.LOADED,
            grpc_endpoint="grpc://meshserve.meshserve:8033",
            http_endpoint="http://meshserve.meshserve:8008",
            traffic=(("m__ksp-0123456789", 100),),
            latest_model="m__ksp-0123456789",
            chain=("m-transformer__ksp-0123456789", "m-explainer__ksp-0123456789"),
        ),
    ],
    ids=["loaded", "invalid", "chained"],
)
def test_the_status_the_controller_writes_validates(
    crds: dict[str, Obj], status: predictor_status.PredictorStatus
) -> None:
    isvc = manifests.load(examples.NEW_FORM_S3)
    isvc["status"] = _written(status)
    assert validation_errors(crds, isvc) == []
    components = isvc["status"].get("components", {})
    for step, model_id in zip(("transformer", "explainer"), status.chain, strict=True):
        if model_id:
            assert components[step]["latestCreatedRevision"] == model_id
            assert components[step]["url"] == status.grpc_endpoint
        else:
            assert step not in components


def test_only_the_quickstart_installs_it(rendered: dict[str, Rendered]) -> None:
    def kinds(folder: str) -> set[str]:
        return {
            o["spec"]["names"]["kind"]
            for o in rendered[folder].objects
            if o["kind"] == "CustomResourceDefinition"
        }

    assert "InferenceService" in kinds("overlays/quickstart")
    assert "InferenceService" not in kinds("overlays/production")
    assert "InferenceService" not in kinds("crd")
