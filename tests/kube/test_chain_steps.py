"""A resource's transformer and explainer become models of their own: from an
InferenceService's spec.transformer/explainer.model, or from the meshserve.io
annotations on either kind; KServe's container and alibi forms are refused
saying the mesh runs them as models."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kube import model_resources
from mesh.core import errors

ISVC = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
    serving.kserve.io/secretKey: localMinIO
spec:
  predictor:
    model:
      modelFormat: {name: sklearn}
      storageUri: s3://models/sklearn/iris
  transformer:
    model:
      modelFormat: {name: transformer}
      storageUri: s3://models/transformers/scale
  explainer:
    model:
      storageUri: gs://other/explainers/iris
"""

PREDICTOR = """
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: iris
  annotations:
    meshserve.io/transformer-uri: transformers/scale
    meshserve.io/explainer-uri: s3://explain/iris-background
spec:
  modelType: {name: sklearn}
  storage:
    key: localMinIO
    path: sklearn/iris
    parameters: {bucket: models}
"""


def test_an_inference_services_transformer_and_explainer_are_models_of_their_own() -> None:
    spec = model_resources.parse(yaml.safe_load(ISVC))
    assert spec.transformer is not None and spec.explainer is not None
    assert (spec.transformer.name, spec.transformer.model_type) == (
        "iris-transformer",
        "transformer",
    )
    assert spec.transformer.path == "transformers/scale"
    assert spec.transformer.storage_params == {"type": "s3", "bucket": "models"}
    assert spec.transformer.storage_key == "localMinIO"  # the service's key annotation
    assert spec.explainer.model_type == "explainer"
    assert spec.explainer.storage_params == {"type": "gcs", "bucket": "other"}
    assert spec.transformer.owner == spec.owner == "inferenceservice"
    assert len({spec.model_id, spec.transformer.model_id, spec.explainer.model_id}) == 3


def test_a_predictors_annotations_name_a_path_in_its_storage_or_a_storage_uri() -> None:
    spec = model_resources.parse(yaml.safe_load(PREDICTOR))
    assert spec.transformer is not None and spec.explainer is not None
    assert spec.transformer.path == "transformers/scale"
    assert (spec.transformer.storage_key, dict(spec.transformer.storage_params)) == (
        "localMinIO",
        {"bucket": "models"},
    )
    assert spec.explainer.path == "iris-background"
    assert spec.explainer.storage_params == {"type": "s3", "bucket": "explain"}


def test_a_changed_transformer_changes_its_model_id_not_the_predictors() -> None:
    before = model_resources.parse(yaml.safe_load(ISVC))
    doc = yaml.safe_load(ISVC)
    doc["spec"]["transformer"]["model"]["storageUri"] = "s3://models/transformers/scale-v2"
    after = model_resources.parse(doc)
    assert after.model_id == before.model_id
    assert after.transformer and before.transformer
    assert after.transformer.model_id != before.transformer.model_id


def test_a_resource_without_a_chain_has_none() -> None:
    doc = yaml.safe_load(ISVC)
    del doc["spec"]["transformer"], doc["spec"]["explainer"]
    spec = model_resources.parse(doc)
    assert (spec.transformer, spec.explainer) == (None, None)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            lambda d: d["spec"].update(transformer={"containers": [{"image": "me/t:1"}]}),
            "spec.transformer.containers",
            "runs a transformer as a model",
        ),
        (
            lambda d: d["spec"].update(explainer={"alibi": {"type": "AnchorTabular"}}),
            "spec.explainer.alibi",
            "runs an explainer as a model",
        ),
        (
            lambda d: d["spec"]["transformer"]["model"].update(modelFormat={"name": "sklearn"}),
            "spec.transformer.model.modelFormat.name",
            "must be 'transformer'",
        ),
        (
            lambda d: d["metadata"]["annotations"].update(
                {"meshserve.io/transformer-uri": "s3://x/y"}
            ),
            "spec.transformer",
            "cannot be given with the meshserve.io/transformer-uri annotation",
        ),
        (
            lambda d: d["spec"]["explainer"]["model"].pop("storageUri"),
            "spec.explainer.model.storageUri",
            "is required",
        ),
    ],
)
def test_what_the_mesh_cannot_run_is_refused_naming_the_field(
    change: Any, field: str, words: str
) -> None:
    doc = yaml.safe_load(ISVC)
    change(doc)
    with pytest.raises(errors.InvalidPredictor) as raised:
        model_resources.parse(doc)
    assert raised.value.field == field
    assert words in raised.value.message
