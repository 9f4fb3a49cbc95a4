"""The controller serves InferenceServices in ModelMesh mode as KServe users expect.

End to end, as in the Predictor tests: the stand-in API server (with the
InferenceService CRD of deploy/crd/inferenceservice), kopf running the real
controller, a real etcd and a mesh node with its own MLServer. An
InferenceService annotated for ModelMesh loads and answers, in either form,
from a PVC by ``storageUri``, with KServe's status (modelStatus, conditions,
URL); one without the annotation is left to KServe untouched; one naming a
transformer image says why it is not served, and serves once the transformer
is given as a model; and a Predictor and an
InferenceService of one name never take the name from each other.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from typing import Any

import kubernetes
import numpy as np
import pytest
import yaml
from tritonclient import grpc as triton

from kube import inference_service, predictor
from meshserve import samples
from tests.integration import controller_fixtures as cf
from tests.integration import mesh_fixtures
from tests.integration import storage_fixtures as sf
from tests.kube import test_inference_service as isvc_examples

NS = cf.NS
ISVCS = inference_service.PLURAL


def _watch_states(
    config: kubernetes.client.Configuration, name: str, since: str, seen: list[tuple[str, str]]
) -> None:
    """Each change of (activeModelState, Ready) of one InferenceService, from
    ``since`` until it is Loaded and Ready."""
    with kubernetes.client.ApiClient(config) as api:
        w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        for event in w.stream(  # type: ignore[no-untyped-call]
            kubernetes.client.CustomObjectsApi(api).list_namespaced_custom_object,
            inference_service.GROUP,
            inference_service.VERSION,
            NS,
            ISVCS,
            field_selector=f"metadata.name={name}",
            resource_version=since,
            timeout_seconds=30,
        ):
            status = event["object"].get("status") or {}
            state = status.get("modelStatus", {}).get("states", {}).get("activeModelState")
            ready = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Ready")
            if state and ready and (not seen or seen[-1] != (state, ready)):
                seen.append((state, ready))
            if (state, ready) == ("Loaded", "True"):
                return


def failure(kube: cf.Kube, plural: str, name: str) -> dict[str, Any] | None:
    status = kube.status_of(plural, name)
    if plural == ISVCS:
        status = status.get("modelStatus", {})
    found = status.get("lastFailureInfo")
    return found if isinstance(found, dict) else None


def test_an_inference_service_loads_answers_and_reports_kserves_status(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    kube_config: kubernetes.client.Configuration,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = cf.unique_name("isvc")
    iris = models["iris"]
    seen: list[tuple[str, str]] = []
    watcher = threading.Thread(
        target=_watch_states, args=(kube_config, name, kube.resource_version(ISVCS), seen)
    )
    watcher.start()
    kube.create(ISVCS, cf.isvc_doc(name, cf.sklearn_model(iris)))
    status = cf.wait_for(lambda: cf.isvc_ready(kube, name), what="Ready")
    watcher.join(30)
    # Not ready until registered; then ready for good: a request while the
    # first copy loads waits for it (Ready never flickers off).
    assert seen[-1] == ("Loaded", "True"), seen
    assert all(ready == "True" for state, ready in seen if state != "Pending"), seen
    assert status["url"] == f"grpc://meshserve.{NS}:8033"
    assert status["components"]["predictor"]["restUrl"] == f"http://meshserve.{NS}:8008"
    assert status["modelStatus"]["copies"] == {"totalCopies": 1, "failedCopies": 0}
    assert {c["type"] for c in status["conditions"]} == {"Ready", "PredictorReady"}
    assert "lastFailureInfo" not in status["modelStatus"]
    vmodel = mesh_node.node.table.vmodel(name)
    assert vmodel is not None and vmodel.owner == inference_service.OWNER
    got = mesh_fixtures.infer(mesh_node.endpoint, name, iris.inputs)
    np.testing.assert_array_equal(got, iris.expected)
    kube.delete(ISVCS, name, inference_service.GROUP, inference_service.VERSION)
    cf.wait_for(lambda: name not in kube.names_of(ISVCS) or None, what="deleted")
    assert mesh_node.node.table.vmodel(name) is None
    assert cf.predictor_models(mesh_node, name) == []


def test_the_old_form_from_a_pvc_uri_serves_the_same_answers(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    """``storageUri: pvc://<claim>/<path>`` finds the file where the claim is
    mounted (``<models root>/<claim>``), as in ModelMesh Serving."""
    name = cf.unique_name("isvc-pvc")
    iris = models["iris"]
    claim = mesh_node.config.node.models_root / "models-pvc-1"
    shutil.copytree(iris.folder, claim / name)
    kube.create(ISVCS, cf.isvc_doc(name, {"sklearn": {"storageUri": f"pvc://models-pvc-1/{name}"}}))
    cf.wait_for(lambda: cf.isvc_ready(kube, name), what="Ready")
    got = mesh_fixtures.infer(mesh_node.endpoint, name, iris.inputs)
    np.testing.assert_array_equal(got, iris.expected)


def test_one_without_the_modelmesh_annotation_is_left_to_kserve(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    part = {
        "model": {
            "modelFormat": {"name": "sklearn"},
            "storage": {"path": str(models["iris"].folder)},
        }
    }
    kserves = cf.unique_name("kserve-owned")
    kube.create(ISVCS, cf.isvc_doc(kserves, part, modelmesh=False))
    ours = cf.unique_name("mesh-owned")
    kube.create(ISVCS, cf.isvc_doc(ours, part))
    cf.wait_for(
        lambda: cf.isvc_ready(kube, ours), what="Ready"
    )  # created after: its events came later
    untouched = kube.get(ISVCS, kserves, inference_service.GROUP, inference_service.VERSION)
    assert untouched is not None
    assert "status" not in untouched
    assert not untouched["metadata"].get("finalizers")
    assert not any(k.startswith("meshserve.io") for k in untouched["metadata"]["annotations"])
    assert mesh_node.node.table.vmodel(kserves) is None


RENAMING_TRANSFORMER = """
class Rename:
    def postprocess(self, response):
        out = response.outputs[0]
        return {"model_name": "", "outputs": [out.model_copy(update={"name": "label"})]}
"""


def test_a_transformer_image_is_refused_saying_why_and_a_transformer_model_serves(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
    tmp_path: Any,
) -> None:
    name = cf.unique_name("isvc-tf")
    doc = cf.isvc_doc(name, cf.sklearn_model(models["iris"]))
    doc["spec"]["transformer"] = {"containers": [{"name": "t", "image": "example/t:1"}]}
    kube.create(ISVCS, doc)
    found = cf.wait_for(lambda: failure(kube, ISVCS, name), what="failure")
    assert found["reason"] == "InvalidPredictorSpec"
    assert "spec.transformer.containers" in found["message"]
    assert "runs a transformer as a model" in found["message"]
    status = kube.status_of(ISVCS, name)
    assert status["modelStatus"]["transitionStatus"] == "InvalidSpec"
    ready_condition = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready_condition["status"] == "False"
    assert ready_condition["reason"] == "InvalidPredictorSpec"
    (tmp_path / "transformer.py").write_text(RENAMING_TRANSFORMER)
    as_model = {"model": {"storage": {"path": str(tmp_path)}}}
    kube.patch_of(ISVCS, name, {"spec": {"transformer": {"containers": None, **as_model}}})
    cf.wait_for(lambda: cf.isvc_ready(kube, name), what="Ready with its transformer")
    with triton.InferenceServerClient(mesh_node.endpoint) as c:
        rows = models["iris"].inputs
        inp = triton.InferInput("predict", list(rows.shape), "FP64")
        inp.set_data_from_numpy(rows)
        got = c.infer(name, [inp], client_timeout=60).as_numpy("label")
    np.testing.assert_array_equal(got.reshape(-1), models["iris"].expected)


def test_a_predictor_and_an_inference_service_of_one_name_never_take_it_from_each_other(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = cf.unique_name("shared")
    kube.create("predictors", cf.predictor_doc(name, models["iris"].folder))
    cf.wait_for(lambda: cf.loaded(kube, name), what="the Predictor Loaded")
    part = {
        "model": {
            "modelFormat": {"name": "sklearn"},
            "storage": {"path": str(models["twos"].folder)},
        }
    }
    kube.create(ISVCS, cf.isvc_doc(name, part))
    found = cf.wait_for(lambda: failure(kube, ISVCS, name), what="the clash said")
    assert "Predictor" in found["message"] and "Delete one of them" in found["message"]
    status = kube.status_of(ISVCS, name)
    assert status["modelStatus"]["transitionStatus"] == "InvalidSpec"
    assert status["modelStatus"]["states"]["activeModelState"] == "Pending"
    assert "url" not in status
    vmodel = mesh_node.node.table.vmodel(name)
    assert vmodel is not None and vmodel.owner == predictor.OWNER
    # Deleting the one that does not hold the name leaves the holder serving.
    kube.delete(ISVCS, name, inference_service.GROUP, inference_service.VERSION)
    cf.wait_for(lambda: name not in kube.names_of(ISVCS) or None, what="deleted")
    assert cf.loaded(kube, name) is not None
    got = mesh_fixtures.infer(mesh_node.endpoint, name, models["iris"].inputs)
    np.testing.assert_array_equal(got, models["iris"].expected)


def _traffic(kube: cf.Kube, name: str) -> list[tuple[str, int, bool]]:
    component = (kube.status_of(ISVCS, name).get("components") or {}).get("predictor") or {}
    return [
        (t["revisionName"], t["percent"], t["latestRevision"])
        for t in component.get("traffic") or []
    ]


def test_a_canary_shows_both_models_traffic_and_promotes_as_kserve_shows_it(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = cf.unique_name("isvc-canary")
    kube.create(ISVCS, cf.isvc_doc(name, cf.sklearn_model(models["iris"])))
    cf.wait_for(lambda: cf.isvc_ready(kube, name), what="Ready")
    ((old, percent, latest),) = _traffic(kube, name)
    assert (percent, latest) == (100, True)
    canary = cf.sklearn_model(models["twos"])
    canary["canaryTrafficPercent"] = 30
    kube.patch_of(ISVCS, name, {"spec": {"predictor": canary}})
    split = cf.wait_for(lambda: _traffic(kube, name) if len(_traffic(kube, name)) == 2 else None)
    ((first, first_percent, first_latest), (new, new_percent, new_latest)) = split
    assert (first, first_percent, first_latest) == (old, 70, False)
    assert (new_percent, new_latest) == (30, True) and new != old
    assert kube.status_of(ISVCS, name)["modelStatus"]["transitionStatus"] == "InProgress"
    answers = {
        int(mesh_fixtures.infer(mesh_node.endpoint, name, models["iris"].inputs[:1])[0])
        for _ in range(60)
    }
    assert answers == {int(models["iris"].expected[0]), 2}  # both models answer
    kube.patch_of(ISVCS, name, {"spec": {"predictor": {"canaryTrafficPercent": 100}}})
    cf.wait_for(lambda: _traffic(kube, name) == [(new, 100, True)], what="promoted")
    cf.wait_for(
        lambda: cf.isvc_ready(kube, name) is not None or None, what="UpToDate after promotion"
    )


@pytest.mark.parametrize("example", ["OLD_FORM_S3", "NEW_FORM_S3"])
def test_modelmesh_servings_example_inference_services_apply_unchanged_from_s3(
    example: str,
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
    s3_server: sf.S3Server,
) -> None:
    """ModelMesh Serving's own example InferenceServices, as written
    (``storageUri: s3://modelmesh-example-models/sklearn/mnist-svm.joblib``,
    ``serving.kserve.io/secretKey: localMinIO``), through the controller,
    from a real S3 server; the file at that key is a model of ours."""
    config_dir = mesh_node.config.node.storage_config_dir
    assert config_dir is not None
    sf.write_config(config_dir, "localMinIO", s3_server.config())
    s3 = s3_server.client()
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket="modelmesh-example-models")
    s3.upload_file(
        str(models["iris"].folder / "model.joblib"),
        "modelmesh-example-models",
        "sklearn/mnist-svm.joblib",
    )
    doc = yaml.safe_load(getattr(isvc_examples, example))
    name = doc["metadata"]["name"]
    kube.create(ISVCS, doc)
    cf.wait_for(lambda: cf.isvc_ready(kube, name), what="Ready")
    got = mesh_fixtures.infer(mesh_node.endpoint, name, models["iris"].inputs)
    np.testing.assert_array_equal(got, models["iris"].expected)
    kube.delete(ISVCS, name, inference_service.GROUP, inference_service.VERSION)
    cf.wait_for(lambda: name not in kube.names_of(ISVCS) or None, what="deleted")
