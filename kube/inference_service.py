"""KServe ``InferenceService`` documents in ModelMesh mode, read as a Predictor.

Since KServe 0.8 the documented way to use ModelMesh is an InferenceService
(``serving.kserve.io/v1beta1``) annotated ``serving.kserve.io/deploymentMode:
ModelMesh``. meshserve reads it the way ModelMesh Serving's controller does,
into the same :class:`kube.predictor.PredictorSpec` a Predictor becomes, so
everything downstream (runtime selection, registration, status) is shared:

- the current form ``spec.predictor.model`` (``modelFormat.name``/``version``,
  ``runtime``) or the older per-framework form (``spec.predictor.sklearn``,
  ``.xgboost``, ...), whose runtime may come from the annotation
  ``serving.kserve.io/servingRuntime``; not both;
- the model's files from ``storageUri`` (``s3://bucket/path``, ``gs://``,
  ``http(s)://`` with Azure Blob hosts told apart, ``pvc://claim/path``),
  turned into storage parameters, or from ``storage.path``; not both;
- the storage key from ``storage.key``, else the annotation
  ``serving.kserve.io/secretKey``; the schema likewise
  (``serving.kserve.io/schemaPath``);
- a transformer or explainer is read by :mod:`kube.chain_steps` (the mesh
  runs them as models beside the predictor).

The vmodel it registers is owned by :data:`OWNER`, so a Predictor and an
InferenceService of one name cannot both hold it: the first registered keeps
it, the other is refused by the mesh. Pure: parsed YAML in, spec out.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from kube import predictor
from mesh.core import errors

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceService"
PLURAL = "inferenceservices"
OWNER = "inferenceservice"
"""The vmodel owner meshserve sets for InferenceService-made vmodels."""

DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
MODELMESH_MODE = "ModelMesh"
"""The annotation (and its value) that hands an InferenceService to ModelMesh;
on Kubernetes the controller serves only those (KServe serves the rest)."""
SECRET_KEY = "serving.kserve.io/secretKey"
SCHEMA_PATH = "serving.kserve.io/schemaPath"
SERVING_RUNTIME = "serving.kserve.io/servingRuntime"

FRAMEWORKS = ("xgboost", "lightgbm", "sklearn", "tensorflow", "onnx", "pytorch", "triton", "pmml")
"""The per-framework predictor fields ModelMesh Serving reads, in its order."""
PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")
"""KServe's ``protocolVersion`` values."""
AZURE_BLOB_HOST = ".blob.core.windows.net"


def _invalid(field: str, problem: str) -> errors.InvalidPredictor:
    return errors.InvalidPredictor(field, problem, KIND)


def _mapping(value: object, field: str, required: bool = False) -> Mapping[str, Any]:
    return predictor.mapping_field(value, field, required, kind=KIND)


def _string(value: object, field: str, required: bool = False) -> str:
    return predictor.string_field(value, field, required, kind=KIND)


def in_modelmesh_mode(doc: Mapping[str, Any]) -> bool:
    """Whether the document carries ``serving.kserve.io/deploymentMode: ModelMesh``."""
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    return isinstance(annotations, Mapping) and annotations.get(DEPLOYMENT_MODE) == MODELMESH_MODE


def parse(doc: object) -> predictor.PredictorSpec:
    """A :class:`kube.predictor.PredictorSpec` from one InferenceService
    document (ModelMesh mode or not: the caller decides whether that matters)."""
    doc = _mapping(doc, "(document)", required=True)
    api_version = _string(doc.get("apiVersion"), "apiVersion", required=True)
    if api_version != API_VERSION:
        raise _invalid("apiVersion", f"must be {API_VERSION!r}, not {api_version!r}")
    kind = _string(doc.get("kind"), "kind", required=True)
    if kind != KIND:
        raise _invalid("kind", f"must be {KIND!r}, not {kind!r}")
    name, annotations, copies = predictor.read_metadata(doc, KIND)
    spec = _mapping(doc.get("spec"), "spec", required=True)
    pred = _mapping(spec.get("predictor"), "spec.predictor", required=True)
    model_type, version, runtime, field, ext = _model_part(pred, annotations)
    protocol = _string(ext.get("protocolVersion"), f"{field}.protocolVersion")
    if protocol and protocol not in PROTOCOLS:
        raise _invalid(f"{field}.protocolVersion", f"must be one of {', '.join(PROTOCOLS)}")
    path, key, params, schema = storage_fields(ext, annotations, field)
    return predictor.PredictorSpec(
        name=name,
        model_type=model_type,
        model_type_version=version,
        path=path,
        runtime=runtime,
        storage_key=key,
        storage_params=params,
        schema_path=schema,
        min_copies=copies[0],
        max_copies=copies[1],
        owner=OWNER,
        canary_percent=predictor.percent_field(
            pred.get("canaryTrafficPercent"), "spec.predictor.canaryTrafficPercent", KIND
        ),
    )


def _model_part(
    pred: Mapping[str, Any], annotations: Mapping[str, Any]
) -> tuple[str, str, str, str, Mapping[str, Any]]:
    """(model type, version, runtime, the field's dotted path, the field) of
    the predictor's model: ``model`` or the one framework field."""
    frameworks = [f for f in FRAMEWORKS if pred.get(f) is not None]
    runtime_annotation = _string(
        annotations.get(SERVING_RUNTIME), f"metadata.annotations.{SERVING_RUNTIME}"
    )
    if pred.get("model") is not None:
        if frameworks:
            raise _invalid(
                "spec.predictor.model",
                f"cannot be given with a framework field (spec.predictor.{frameworks[0]})",
            )
        if runtime_annotation:
            raise _invalid(
                f"metadata.annotations.{SERVING_RUNTIME}",
                "cannot be given with spec.predictor.model (use spec.predictor.model.runtime)",
            )
        model = _mapping(pred.get("model"), "spec.predictor.model")
        fmt = _mapping(model.get("modelFormat"), "spec.predictor.model.modelFormat", required=True)
        return (
            _string(fmt.get("name"), "spec.predictor.model.modelFormat.name", required=True),
            _string(fmt.get("version"), "spec.predictor.model.modelFormat.version"),
            _string(model.get("runtime"), "spec.predictor.model.runtime"),
            "spec.predictor.model",
            model,
        )
    if not frameworks:
        raise _invalid(
            "spec.predictor",
            f"names no model: give spec.predictor.model or one of {', '.join(FRAMEWORKS)}",
        )
    if len(frameworks) > 1:
        raise _invalid("spec.predictor", f"names several frameworks: {', '.join(frameworks)}")
    field = f"spec.predictor.{frameworks[0]}"
    return frameworks[0], "", runtime_annotation, field, _mapping(pred[frameworks[0]], field)


def storage_fields(
    ext: Mapping[str, Any], annotations: Mapping[str, Any], field: str
) -> tuple[str, str, dict[str, str], str]:
    """(path, storage key, parameters, schema path), as ModelMesh Serving
    resolves them: URI parameters override ``storage.parameters``; the key
    and schema path fall back to their annotations."""
    uri = _string(ext.get("storageUri"), f"{field}.storageUri")
    storage = _mapping(ext.get("storage"), f"{field}.storage")
    storage_path = _string(storage.get("path"), f"{field}.storage.path")
    if uri and storage_path:
        raise _invalid(f"{field}.storageUri", "cannot be given with storage.path")
    params = predictor.string_map(storage.get("parameters"), f"{field}.storage.parameters", KIND)
    if uri:
        path, uri_params = storage_uri_fields(uri, f"{field}.storageUri")
        params.update(uri_params)
    elif storage_path:
        path = storage_path
    else:
        raise _invalid(f"{field}.storageUri", "is required (or storage.path)")
    key = _string(storage.get("key"), f"{field}.storage.key") or _string(
        annotations.get(SECRET_KEY), f"metadata.annotations.{SECRET_KEY}"
    )
    schema = _string(storage.get("schemaPath"), f"{field}.storage.schemaPath") or _string(
        annotations.get(SCHEMA_PATH), f"metadata.annotations.{SCHEMA_PATH}"
    )
    return path, key, params, schema


def storage_uri_fields(uri: str, field: str = "storageUri") -> tuple[str, dict[str, str]]:
    """The model path and the storage parameters a ``storageUri`` stands for."""
    parsed = urllib.parse.urlparse(uri)
    scheme, host, path = parsed.scheme.lower(), parsed.netloc, parsed.path.lstrip("/")
    if scheme in ("s3", "gs", "pvc"):
        if not host:
            raise _invalid(field, f"{uri!r} names no {'claim' if scheme == 'pvc' else 'bucket'}")
        if not path:
            raise _invalid(field, f"{uri!r} names no path inside {host!r}")
        if scheme == "pvc":
            return path, {"type": "pvc", "name": host}
        return path, {"type": "s3" if scheme == "s3" else "gcs", "bucket": host}
    if scheme in ("http", "https"):
        if not host:
            raise _invalid(field, f"{uri!r} names no host")
        if host.endswith(AZURE_BLOB_HOST):
            container, _, blob = path.partition("/")
            if not container or not blob:
                raise _invalid(field, f"{uri!r} names no container and blob path")
            account = host.split(".", 1)[0]
            return blob, {"type": "azure", "container": container, "account_name": account}
        return "", {"type": "http", "url": uri}
    raise _invalid(
        field,
        f"scheme {scheme + '://' if scheme else '(none)'} is not supported "
        "(s3://, gs://, http://, https://, pvc://)",
    )
