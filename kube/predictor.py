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


def _mapping(value: object, field: str, required: bool = False) -> Mapping[str, Any]:
    if value is None:
        if required:
            raise errors.InvalidPredictor(field, "is required")
        return {}
    if not isinstance(value, Mapping):
        raise errors.InvalidPredictor(field, f"must be a mapping, not {type(value).__name__}")
    return value


def _string(value: object, field: str, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise errors.InvalidPredictor(field, "is required")
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise errors.InvalidPredictor(field, f"must be a string, not {type(value).__name__}")
    return str(value)


def _count(value: object, field: str) -> int:
    text = _string(value, field)
    if not text:
        return 0
    if not text.isdigit():
        raise errors.InvalidPredictor(field, f"must be a whole number, not {text!r}")
    return int(text)


def parse(doc: object) -> PredictorSpec:
    """A :class:`PredictorSpec` from one parsed YAML document."""
    doc = _mapping(doc, "(document)", required=True)
    api_version = _string(doc.get("apiVersion"), "apiVersion", required=True)
    if api_version != API_VERSION:
        raise errors.InvalidPredictor("apiVersion", f"must be {API_VERSION!r}, not {api_version!r}")
    kind = _string(doc.get("kind"), "kind", required=True)
    if kind != KIND:
        raise errors.InvalidPredictor("kind", f"must be {KIND!r}, not {kind!r}")
    metadata = _mapping(doc.get("metadata"), "metadata", required=True)
    name = _string(metadata.get("name"), "metadata.name", required=True)
    try:
        ids.validate(name, "metadata.name")
    except errors.InvalidRequest as e:
        raise errors.InvalidPredictor("metadata.name", e.message) from None
    if "__" in name:
        raise errors.InvalidPredictor("metadata.name", "may not contain '__'")
    annotations = _mapping(metadata.get("annotations"), "metadata.annotations")
    copies = {
        key: _count(annotations.get(key), f"metadata.annotations.{key}")
        for key in (MIN_COPIES, MAX_COPIES)
    }
    if copies[MAX_COPIES] and copies[MIN_COPIES] > copies[MAX_COPIES]:
        raise errors.InvalidPredictor(
            f"metadata.annotations.{MIN_COPIES}", f"is more than {MAX_COPIES}"
        )
    spec = _mapping(doc.get("spec"), "spec", required=True)
    model_type = _mapping(spec.get("modelType"), "spec.modelType", required=True)
    runtime = _mapping(spec.get("runtime"), "spec.runtime")
    storage = _mapping(spec.get("storage"), "spec.storage")
    s3 = _mapping(storage.get("s3"), "spec.storage.s3")
    path = _string(storage.get("path"), "spec.storage.path") or _string(
        spec.get("path"), "spec.path"
    )
    if not path:
        raise errors.InvalidPredictor("spec.storage.path", "is required")
    raw_params = _mapping(storage.get("parameters"), "spec.storage.parameters")
    params = {str(k): _string(v, f"spec.storage.parameters.{k}") for k, v in raw_params.items()}
    bucket = _string(s3.get("bucket"), "spec.storage.s3.bucket")
    if bucket:
        params.setdefault("bucket", bucket)
    return PredictorSpec(
        name=name,
        model_type=_string(model_type.get("name"), "spec.modelType.name", required=True),
        model_type_version=_string(model_type.get("version"), "spec.modelType.version"),
        path=path,
        runtime=_string(runtime.get("name"), "spec.runtime.name"),
        storage_key=_string(storage.get("key"), "spec.storage.key")
        or _string(s3.get("secretKey"), "spec.storage.s3.secretKey"),
        storage_params=params,
        schema_path=_string(storage.get("schemaPath"), "spec.storage.schemaPath")
        or _string(spec.get("schemaPath"), "spec.schemaPath"),
        min_copies=copies[MIN_COPIES],
        max_copies=copies[MAX_COPIES],
    )


def storage_key_json(spec: PredictorSpec) -> str:
    """The spec's storage key, parameters, schema path and pinned runtime as
    the management API's ``ModelInfo.key`` (:mod:`mesh.core.model_key`)."""
    return model_key.KeyFields(
        storage_key=spec.storage_key,
        storage_params=spec.storage_params,
        schema_path=spec.schema_path,
        runtime=spec.runtime,
    ).to_json()
