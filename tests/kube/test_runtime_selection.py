"""Which runtime can serve a Predictor (:mod:`kube.runtime_selection`), from
ServingRuntime documents as users write them."""

from __future__ import annotations

from typing import Any

import pytest

from kube import predictor, predictor_status, runtime_deployment, runtime_selection
from mesh.core import errors
from tests.kube import runtime_documents

_doc = runtime_documents.runtime_doc
_rt = runtime_documents.runtime


def _spec(
    model_type: str = "sklearn", version: str = "", runtime: str = ""
) -> predictor.PredictorSpec:
    return predictor.PredictorSpec(
        name="p", model_type=model_type, path="m", model_type_version=version, runtime=runtime
    )


SKLEARN = [{"name": "sklearn", "version": "1", "autoSelect": True}]


def test_parse_reads_formats_adapter_and_pod_fields() -> None:
    rt = _rt(
        "mlserver-1.x",
        [*SKLEARN, {"name": "xgboost"}],
        grpcDataEndpoint="port:9001",
        replicas=3,
        nodeSelector={"pool": "cpu"},
    )
    assert rt.formats == (
        runtime_selection.ModelFormat("sklearn", "1", True),
        runtime_selection.ModelFormat("xgboost", "", False),
    )
    assert rt.server_type == "mlserver" and rt.runtime_port == 8001  # the adapter's port wins
    assert rt.replicas == 3 and rt.uid == "uid-mlserver-1.x" and rt.usable
    assert rt.pod["nodeSelector"] == {"pool": "cpu"}
    no_adapter = _doc("x", SKLEARN, grpcDataEndpoint="port:9001")
    del no_adapter["spec"]["builtInAdapter"]
    no_adapter["spec"]["containers"].insert(
        0, {"name": runtime_selection.MESH_CONTAINER, "image": "m"}
    )
    assert runtime_selection.parse_runtime(no_adapter).runtime_port == 9001


def test_parse_rejects_what_is_not_a_runtime() -> None:
    with pytest.raises(errors.InvalidRequest):
        runtime_selection.parse_runtime({"kind": "Predictor", "metadata": {"name": "x"}})
    with pytest.raises(errors.InvalidRequest):
        runtime_selection.parse_runtime({"kind": runtime_selection.NAMESPACED_KIND, "metadata": {}})


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"disabled": True}, "is disabled"),
        ({"multiModel": False}, "not a multi-model runtime"),
        ({"containers": []}, "no containers"),
        ({"builtInAdapter": {}}, "no 'mesh-node' container and no builtInAdapter.serverType"),
    ],
)
def test_unusable_runtimes_are_not_recognized(spec: dict[str, Any], problem: str) -> None:
    rt = _rt("r", SKLEARN, **spec)
    assert not rt.usable
    found = runtime_selection.support(_spec(runtime="r"), {"r": rt})
    assert found.reason is predictor_status.FailureReason.RUNTIME_NOT_RECOGNIZED
    assert problem in found.message
    assert not runtime_selection.support(_spec(), {"r": rt}).supported
    assert (
        runtime_deployment.desired_deployments(
            {"r": rt}, runtime_deployment.DeploymentOptions("ns")
        )
        == {}
    )


def test_support_by_type_needs_auto_select_and_the_version_if_given() -> None:
    auto = _rt("auto", SKLEARN)
    manual = _rt("manual", [{"name": "sklearn", "version": "1"}])
    both = {"auto": auto, "manual": manual}
    assert runtime_selection.support(_spec(), both).runtimes == ("auto",)
    assert runtime_selection.support(_spec(version="1"), both).runtimes == ("auto",)
    none = runtime_selection.support(_spec(version="2"), both)
    assert (
        not none.supported and none.reason is predictor_status.FailureReason.NO_SUPPORTING_RUNTIME
    )
    assert "sklearn (version 2)" in none.message
    assert (
        runtime_selection.support(_spec("onnx"), both).reason
        is predictor_status.FailureReason.NO_SUPPORTING_RUNTIME
    )
    assert (
        runtime_selection.support(_spec(), {}).reason
        is predictor_status.FailureReason.NO_SUPPORTING_RUNTIME
    )


def test_a_pinned_runtime_must_exist_and_list_the_type() -> None:
    manual = _rt("manual", [{"name": "sklearn"}])
    runtimes_ = {"manual": manual}
    assert runtime_selection.support(_spec(runtime="manual"), runtimes_).runtimes == ("manual",)
    missing = runtime_selection.support(_spec(runtime="other"), runtimes_)
    assert missing.reason is predictor_status.FailureReason.RUNTIME_NOT_RECOGNIZED
    assert "'other' does not exist" in missing.message
    wrong = runtime_selection.support(_spec("xgboost", runtime="manual"), runtimes_)
    assert wrong.reason is predictor_status.FailureReason.NO_SUPPORTING_RUNTIME


def test_a_serving_runtime_hides_the_cluster_runtime_of_its_name() -> None:
    cluster = runtime_selection.parse_runtime(
        _doc("shared", SKLEARN, kind=runtime_selection.CLUSTER_KIND)
    )
    other = runtime_selection.parse_runtime(
        _doc("only-cluster", SKLEARN, kind=runtime_selection.CLUSTER_KIND)
    )
    local = _rt("shared", [{"name": "xgboost", "autoSelect": True}])
    visible = runtime_selection.visible_runtimes([local], [cluster, other])
    assert visible["shared"] is local and visible["only-cluster"] is other
    assert runtime_selection.support(_spec(runtime="shared"), visible).reason is (
        predictor_status.FailureReason.NO_SUPPORTING_RUNTIME
    )
