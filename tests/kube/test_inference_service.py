"""InferenceServices in ModelMesh mode read as ModelMesh Serving reads them.

The documents are the shapes of ModelMesh Serving's own examples
(``config/example-isvcs``, ``fvt/testdata/isvcs``): the current ``model`` form
and the older per-framework form, a storage key with a path, ``storageUri``
over S3, HTTPS and a PVC, the key from the annotation.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kube import inference_service, model_resources, predictor
from mesh.core import errors


def doc(text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


NEW_FORM_KEY_PATH = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: example-xgboost-mushroom-fil
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: xgboost
      runtime: triton-2.x
      storage:
        key: localMinIO
        path: xgboost/mushroom-fil
"""

OLD_FORM_S3 = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: example-sklearn-isvc
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
    serving.kserve.io/secretKey: localMinIO
spec:
  predictor:
    sklearn:
      storageUri: s3://modelmesh-example-models/sklearn/mnist-svm.joblib
"""

NEW_FORM_S3 = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: example-sklearn-isvc2
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
    serving.kserve.io/secretKey: localMinIO
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: s3://modelmesh-example-models/sklearn/mnist-svm.joblib
"""

HTTPS = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: isvc-https
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: "https://github.com/kserve/modelmesh-minio-examples/blob/main/sklearn/mnist-svm.joblib?raw=true"
"""

PVC_URI = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: isvc-pvc-storage-uri
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: pvc://models-pvc-1/sklearn/mnist-svm.joblib
"""

PVC_PATH = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: isvc-pvc-storage-path
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storage:
        parameters:
          type: pvc
          name: models-pvc-1
        path: sklearn/mnist-svm.joblib
"""


def test_the_current_form_with_a_storage_key_reads_like_the_predictor_it_replaces() -> None:
    spec = inference_service.parse(doc(NEW_FORM_KEY_PATH))
    assert (spec.name, spec.model_type, spec.runtime) == (
        "example-xgboost-mushroom-fil",
        "xgboost",
        "triton-2.x",
    )
    assert (spec.storage_key, spec.path, dict(spec.storage_params)) == (
        "localMinIO",
        "xgboost/mushroom-fil",
        {},
    )
    assert spec.owner == inference_service.OWNER


def test_both_forms_of_the_same_s3_model_are_the_same_model() -> None:
    old = inference_service.parse(doc(OLD_FORM_S3))
    new = inference_service.parse(doc(NEW_FORM_S3))
    for spec in (old, new):
        assert spec.model_type == "sklearn"
        assert spec.path == "sklearn/mnist-svm.joblib"
        assert spec.storage_key == "localMinIO"
        assert dict(spec.storage_params) == {"type": "s3", "bucket": "modelmesh-example-models"}
    assert old.model_id.split("__")[1] == new.model_id.split("__")[1]


def test_an_https_uri_is_an_http_storage_url_with_no_path() -> None:
    spec = inference_service.parse(doc(HTTPS))
    assert spec.path == ""
    assert spec.storage_params == {
        "type": "http",
        "url": "https://github.com/kserve/modelmesh-minio-examples/blob/main/sklearn/"
        "mnist-svm.joblib?raw=true",
    }


def test_a_pvc_by_uri_and_by_parameters_name_the_same_claim_and_path() -> None:
    by_uri = inference_service.parse(doc(PVC_URI))
    by_path = inference_service.parse(doc(PVC_PATH))
    for spec in (by_uri, by_path):
        assert spec.path == "sklearn/mnist-svm.joblib"
        assert dict(spec.storage_params) == {"type": "pvc", "name": "models-pvc-1"}


@pytest.mark.parametrize(
    ("uri", "path", "params"),
    [
        ("gs://bucket/a/b", "a/b", {"type": "gcs", "bucket": "bucket"}),
        (
            "https://acct.blob.core.windows.net/models/iris/model.joblib",
            "iris/model.joblib",
            {"type": "azure", "container": "models", "account_name": "acct"},
        ),
    ],
)
def test_storage_uris_become_modelmesh_servings_parameters(
    uri: str, path: str, params: dict[str, str]
) -> None:
    assert inference_service.storage_uri_fields(uri) == (path, params)


def test_uri_parameters_override_storage_parameters_and_the_spec_key_beats_the_annotation() -> None:
    d = doc(NEW_FORM_S3)
    d["spec"]["predictor"]["model"]["storage"] = {
        "key": "team",
        "parameters": {"bucket": "other", "region": "eu"},
    }
    spec = inference_service.parse(d)
    assert spec.storage_key == "team"
    assert dict(spec.storage_params) == {
        "type": "s3",
        "bucket": "modelmesh-example-models",
        "region": "eu",
    }


def test_the_runtime_annotation_serves_the_old_form_only() -> None:
    old = doc(OLD_FORM_S3)
    old["metadata"]["annotations"][inference_service.SERVING_RUNTIME] = "mlserver-1.x"
    assert inference_service.parse(old).runtime == "mlserver-1.x"
    new = doc(NEW_FORM_S3)
    new["metadata"]["annotations"][inference_service.SERVING_RUNTIME] = "mlserver-1.x"
    with pytest.raises(errors.InvalidPredictor, match=r"spec\.predictor\.model\.runtime"):
        inference_service.parse(new)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda d: d["spec"].update(transformer={"containers": []}),
            "spec.transformer.containers",
        ),
        (lambda d: d["spec"].update(explainer={"alibi": {}}), "spec.explainer.alibi"),
        (lambda d: d["spec"]["predictor"].pop("model"), "spec.predictor"),
        (
            lambda d: d["spec"]["predictor"].update(sklearn={"storageUri": "s3://b/k"}),
            "spec.predictor.model",
        ),
        (
            lambda d: d["spec"]["predictor"]["model"].update(storage={"path": "x"}),
            "spec.predictor.model.storageUri",
        ),
        (
            lambda d: d["spec"]["predictor"]["model"].update(storageUri="ftp://h/x"),
            "spec.predictor.model.storageUri",
        ),
        (
            lambda d: d["spec"]["predictor"]["model"].update(storageUri="s3://bucket-only"),
            "spec.predictor.model.storageUri",
        ),
        (
            lambda d: d["spec"]["predictor"]["model"].update(protocolVersion="v3"),
            "spec.predictor.model.protocolVersion",
        ),
        (
            lambda d: d["spec"]["predictor"]["model"].pop("modelFormat"),
            "spec.predictor.model.modelFormat",
        ),
        (lambda d: d.update(apiVersion="serving.kserve.io/v1alpha1"), "apiVersion"),
        (lambda d: d["metadata"].update(name="a__b"), "metadata.name"),
    ],
)
def test_what_meshserve_cannot_serve_is_refused_naming_the_field(change: Any, field: str) -> None:
    d = doc(NEW_FORM_S3)
    change(d)
    with pytest.raises(errors.InvalidPredictor) as raised:
        model_resources.parse(d)
    assert raised.value.field == field
    assert raised.value.message.startswith(f"InferenceService field {field!r}")


def test_the_modelmesh_annotation_is_what_hands_a_service_to_the_mesh() -> None:
    assert inference_service.in_modelmesh_mode(doc(NEW_FORM_S3))
    d = doc(NEW_FORM_S3)
    del d["metadata"]["annotations"][inference_service.DEPLOYMENT_MODE]
    assert not inference_service.in_modelmesh_mode(d)
    assert inference_service.parse(d).name == "example-sklearn-isvc2"  # the CLI takes it


def test_either_kind_is_read_by_its_kind_and_owned_by_it() -> None:
    isvc = model_resources.parse(doc(NEW_FORM_S3))
    assert isvc.owner == "inferenceservice"
    pred = model_resources.parse(
        {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "Predictor",
            "metadata": {"name": "p"},
            "spec": {"modelType": {"name": "sklearn"}, "path": "x"},
        }
    )
    assert pred.owner == predictor.OWNER
    assert model_resources.kind_of_owner(isvc.owner) == "InferenceService"
    with pytest.raises(errors.InvalidPredictor, match="kind"):
        model_resources.parse({"kind": "Deployment"})
