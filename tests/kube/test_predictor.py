"""Predictor YAML as written for KServe ModelMesh Serving is accepted as is."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kube import predictor
from mesh.core import errors, ids, model_key

SAMPLE = """
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: example-sklearn-mnist-svm
spec:
  modelType:
    name: sklearn
  path: sklearn/mnist-svm.joblib
  storage:
    s3:
      secretKey: localMinIO
"""

CURRENT = """
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: iris
spec:
  modelType: {name: sklearn, version: "1"}
  runtime: {name: mlserver-1.x}
  storage:
    key: localMinIO
    path: sklearn/iris
    schemaPath: schema/iris.json
    parameters: {bucket: modelmesh-example-models}
"""


def _doc(text: str) -> Any:
    return yaml.safe_load(text)


def test_reads_modelmesh_serving_sample_yaml() -> None:
    spec = predictor.parse(_doc(SAMPLE))
    assert spec.name == "example-sklearn-mnist-svm"
    assert spec.model_type == "sklearn"
    assert spec.path == "sklearn/mnist-svm.joblib"
    assert spec.storage_key == "localMinIO"


def test_reads_the_current_storage_spelling() -> None:
    spec = predictor.parse(_doc(CURRENT))
    assert (spec.storage_key, spec.path, spec.schema_path) == (
        "localMinIO",
        "sklearn/iris",
        "schema/iris.json",
    )
    assert spec.storage_params == {"bucket": "modelmesh-example-models"}
    assert spec.runtime == "mlserver-1.x"


def test_model_id_is_stable_and_changes_with_the_spec() -> None:
    a = predictor.parse(_doc(CURRENT))
    doc = _doc(CURRENT)
    assert predictor.parse(doc).model_id == a.model_id
    doc["spec"]["storage"]["path"] = "sklearn/iris-v2"
    b = predictor.parse(doc)
    assert b.model_id != a.model_id
    assert a.model_id.startswith("iris__ksp-")
    assert ids.validate(a.model_id) == a.model_id


def test_storage_key_json_round_trips() -> None:
    spec = predictor.parse(_doc(CURRENT))
    assert model_key.parse(predictor.storage_key_json(spec)) == model_key.KeyFields(
        "localMinIO", {"bucket": "modelmesh-example-models"}, "schema/iris.json", "mlserver-1.x"
    )
    assert model_key.parse("plain-key") == model_key.KeyFields("plain-key")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("apiVersion"), "apiVersion"),
        (lambda d: d.update(kind="InferenceService"), "kind"),
        (lambda d: d["metadata"].pop("name"), "metadata.name"),
        (lambda d: d["metadata"].update(name="a/b"), "metadata.name"),
        (lambda d: d["spec"].pop("modelType"), "spec.modelType"),
        (lambda d: d["spec"]["modelType"].pop("name"), "spec.modelType.name"),
        (lambda d: d["spec"]["modelType"].update(name=["x"]), "spec.modelType.name"),
        (lambda d: d["spec"]["storage"].pop("path"), "spec.storage.path"),
        (lambda d: d["spec"].update(storage="s3://x"), "spec.storage"),
        (lambda d: d["spec"]["storage"].update(parameters=[1]), "spec.storage.parameters"),
    ],
)
def test_malformed_predictor_is_refused_naming_the_field(mutate: Any, field: str) -> None:
    doc = _doc(CURRENT)
    mutate(doc)
    with pytest.raises(errors.InvalidPredictor) as info:
        predictor.parse(doc)
    assert info.value.field == field
    assert field in str(info.value)


def test_copy_limits_come_from_annotations_and_do_not_change_the_model_id() -> None:
    doc = _doc(CURRENT)
    plain = predictor.parse(doc).model_id
    doc["metadata"]["annotations"] = {
        "meshserve.io/min-copies": "2",
        "meshserve.io/max-copies": "4",
    }
    spec = predictor.parse(doc)
    assert (spec.min_copies, spec.max_copies) == (2, 4)
    assert spec.model_id == plain


@pytest.mark.parametrize(
    "annotations",
    [
        {"meshserve.io/min-copies": "two"},
        {"meshserve.io/min-copies": "3", "meshserve.io/max-copies": "2"},
    ],
)
def test_bad_copy_annotations_are_refused_naming_them(annotations: dict[str, str]) -> None:
    doc = _doc(CURRENT)
    doc["metadata"]["annotations"] = annotations
    with pytest.raises(errors.InvalidPredictor, match=r"meshserve\.io/min-copies"):
        predictor.parse(doc)
