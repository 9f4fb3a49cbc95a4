"""KServe ModelMesh Serving ``Predictor`` documents, read and checked.

A Predictor (``serving.kserve.io/v1alpha1``) names a model and where its
files are. meshserve registers it as a vmodel (the Predictor's name) pointing
at a concrete model whose id is derived from the spec: change the spec and the
id changes, so the old model keeps serving until the new one is loaded.

Both spellings ModelMesh Serving accepts are read: the current
``spec.storage.{key,path,schemaPath,parameters}`` and the older
``spec.path`` / ``spec.storage.s3.{secretKey,bucket}``. A malformed document
raises :class:`mesh.core.errors.InvalidPredictor` naming the field.

Pure: takes already-parsed YAML (dicts), no I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from mesh.core import errors, ids, model_key

API_VERSION = "serving.kserve.io/v1alpha1"
KIND = "Predictor"
OWNER = "predictor"
"""The vmodel owner meshserve sets for Predictor-made vmodels."""
MIN_COPIES = "meshserve.io/min-copies"
MAX_COPIES = "meshserve.io/max-copies"
"""Annotations setting a Predictor's copy limits (KServe's spec has no field
for them; annotations keep ModelMesh Serving's YAML valid)."""
CANARY = "meshserve.io/canary-traffic-percent"
"""A Predictor's canary (an InferenceService has KServe's
``spec.predictor.canaryTrafficPercent``): a changed spec's model takes this
share of requests, the last rolled-out one the rest, until 100 or removed."""


@dataclasses.dataclass(frozen=True)
class PredictorSpec:
    """What meshserve needs of a Predictor."""

    name: str
    """``metadata.name``: the vmodel id clients call."""
    model_type: str
    """``spec.modelType.name`` (``sklearn``, ``xgboost``...)."""
    path: str
    """``spec.storage.path``: a folder or file, or a ``file://`` URI."""
    model_type_version: str = ""
    """``spec.modelType.version``, if given."""
    runtime: str = ""
    """``spec.runtime.name``: pin to one runtime, if given."""
    storage_key: str = ""
    """``spec.storage.key``: which storage configuration; empty for local."""
    storage_params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """``spec.storage.parameters``: overrides of the storage configuration."""
    schema_path: str = ""
    """``spec.storage.schemaPath``, if given."""
    min_copies: int = 0
    """Annotation ``meshserve.io/min-copies``: copies kept loaded without traffic."""
    max_copies: int = 0
    """Annotation ``meshserve.io/max-copies``: most copies added for load (0: no limit)."""
    owner: str = OWNER
    """The vmodel's owner in the mesh: which kind of resource registered the
    name (``predictor``, or ``inferenceservice``: :mod:`kube.inference_service`).
    Not part of :attr:`model_id`: the same files are the same model."""
    canary_percent: int | None = None
    """The share of requests (0-100) a changed spec's model takes while the
    last rolled-out one keeps the rest; ``None``: none (the new model takes
    over once loaded). Not part of :attr:`model_id`: a percent is not a model."""
    transformer: PredictorSpec | None = None
    """The model run around this one (preprocess, postprocess):
    :mod:`kube.chain_steps`. Not part of :attr:`model_id`: a model of its own."""
    explainer: PredictorSpec | None = None
    """The model answering explain calls: :mod:`kube.chain_steps`."""

    @property
    def model_id(self) -> str:
        """The concrete model id: the name plus a hash of everything that
        decides which files are loaded and how."""
        canonical = json.dumps(
            {
                "type": self.model_type,
                "version": self.model_type_version,
                "runtime": self.runtime,
                "path": self.path,
                "key": self.storage_key,
                "params": dict(sorted(self.storage_params.items())),
                "schema": self.schema_path,
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
        return f"{self.name}__ksp-{digest}"


def mapping_field(
    value: object, field: str, required: bool = False, kind: str = KIND
) -> Mapping[str, Any]:
    """A field that must be a mapping (``{}`` when absent and optional)."""
    if value is None:
        if required:
            raise errors.InvalidPredictor(field, "is required", kind)
        return {}
    if not isinstance(value, Mapping):
        raise errors.InvalidPredictor(field, f"must be a mapping, not {type(value).__name__}", kind)
    return value


def string_field(value: object, field: str, required: bool = False, kind: str = KIND) -> str:
    """A field that must be a string (numbers are taken as YAML wrote them)."""
    if value is None or value == "":
        if required:
            raise errors.InvalidPredictor(field, "is required", kind)
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise errors.InvalidPredictor(field, f"must be a string, not {type(value).__name__}", kind)
    return str(value)


def count_field(value: object, field: str, kind: str = KIND) -> int:
    """A field that must be a whole number (0 when absent)."""
    text = string_field(value, field, kind=kind)
    if not text:
        return 0
    if not text.isdigit():
        raise errors.InvalidPredictor(field, f"must be a whole number, not {text!r}", kind)
    return int(text)


def string_map(value: object, field: str, kind: str = KIND) -> dict[str, str]:
    """A mapping of strings to strings (``storage.parameters``)."""
    raw = mapping_field(value, field, kind=kind)
    return {str(k): string_field(v, f"{field}.{k}", kind=kind) for k, v in raw.items()}


def parse(doc: object) -> PredictorSpec:
    """A :class:`PredictorSpec` from one parsed YAML document."""
    doc = mapping_field(doc, "(document)", required=True)
    api_version = string_field(doc.get("apiVersion"), "apiVersion", required=True)
    if api_version != API_VERSION:
        raise errors.InvalidPredictor("apiVersion", f"must be {API_VERSION!r}, not {api_version!r}")
    kind = string_field(doc.get("kind"), "kind", required=True)
    if kind != KIND:
        raise errors.InvalidPredictor("kind", f"must be {KIND!r}, not {kind!r}")
    name, annotations, copies = read_metadata(doc, KIND)
    spec = mapping_field(doc.get("spec"), "spec", required=True)
    model_type = mapping_field(spec.get("modelType"), "spec.modelType", required=True)
    runtime = mapping_field(spec.get("runtime"), "spec.runtime")
    storage = mapping_field(spec.get("storage"), "spec.storage")
    s3 = mapping_field(storage.get("s3"), "spec.storage.s3")
    path = string_field(storage.get("path"), "spec.storage.path") or string_field(
        spec.get("path"), "spec.path"
    )
    if not path:
        raise errors.InvalidPredictor("spec.storage.path", "is required")
    params = string_map(storage.get("parameters"), "spec.storage.parameters")
    bucket = string_field(s3.get("bucket"), "spec.storage.s3.bucket")
    if bucket:
        params.setdefault("bucket", bucket)
    return PredictorSpec(
        name=name,
        model_type=string_field(model_type.get("name"), "spec.modelType.name", required=True),
        model_type_version=string_field(model_type.get("version"), "spec.modelType.version"),
        path=path,
        runtime=string_field(runtime.get("name"), "spec.runtime.name"),
        storage_key=string_field(storage.get("key"), "spec.storage.key")
        or string_field(s3.get("secretKey"), "spec.storage.s3.secretKey"),
        storage_params=params,
        schema_path=string_field(storage.get("schemaPath"), "spec.storage.schemaPath")
        or string_field(spec.get("schemaPath"), "spec.schemaPath"),
        min_copies=copies[0],
        max_copies=copies[1],
        canary_percent=percent_field(
            annotations.get(CANARY), f"metadata.annotations.{CANARY}", KIND
        ),
    )


def percent_field(value: object, field: str, kind: str) -> int | None:
    """A traffic percent, 0-100, or ``None`` when absent."""
    if value is None or value == "":
        return None
    percent = count_field(value, field, kind)
    if percent > 100:
        raise errors.InvalidPredictor(field, f"must be between 0 and 100, not {percent}", kind)
    return percent


def read_metadata(
    doc: Mapping[str, Any], kind: str
) -> tuple[str, Mapping[str, Any], tuple[int, int]]:
    """``metadata.name`` (checked as a vmodel id), the annotations, and the
    copy limits they set (min, max), as both kinds read them."""

    def invalid(field: str, problem: str) -> errors.InvalidPredictor:
        return errors.InvalidPredictor(field, problem, kind)

    metadata = mapping_field(doc.get("metadata"), "metadata", required=True, kind=kind)
    name = string_field(metadata.get("name"), "metadata.name", required=True, kind=kind)
    try:
        ids.validate(name, "metadata.name")
    except errors.InvalidRequest as e:
        raise invalid("metadata.name", e.message) from None
    if "__" in name:
        raise invalid("metadata.name", "may not contain '__'")
    annotations = mapping_field(metadata.get("annotations"), "metadata.annotations", kind=kind)
    low, high = (
        count_field(annotations.get(key), f"metadata.annotations.{key}", kind)
        for key in (MIN_COPIES, MAX_COPIES)
    )
    if high and low > high:
        raise invalid(f"metadata.annotations.{MIN_COPIES}", f"is more than {MAX_COPIES}")
    return name, annotations, (low, high)


def storage_key_json(spec: PredictorSpec) -> str:
    """The spec's storage key, parameters, schema path and pinned runtime as
    the management API's ``ModelInfo.key`` (:mod:`mesh.core.model_key`)."""
    return model_key.KeyFields(
        storage_key=spec.storage_key,
        storage_params=spec.storage_params,
        schema_path=spec.schema_path,
        runtime=spec.runtime,
    ).to_json()
