"""The CustomResourceDefinitions the stand-in API server serves in tests.

The real ones are ``deploy/crd/*.yaml``; the tests load those when they are
there, so that the controller is tested against the schemas users install.
Until that tree exists, :data:`MINIMAL` stands in: the same group, kinds,
scopes and status subresource, with schemas that cover the fields the
controller reads and writes (those of KServe ModelMesh Serving).
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Any

import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "deploy" / "crd"
GROUP = "serving.kserve.io"
KINDS = ("Predictor", "ServingRuntime", "ClusterServingRuntime")

_STRING: dict[str, Any] = {"type": "string"}
_MODEL_STATES = ["", "Pending", "Standby", "Loading", "Loaded", "FailedToLoad"]

_PREDICTOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": _STRING,
        "kind": _STRING,
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["modelType"],
            "properties": {
                "modelType": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": _STRING, "version": _STRING},
                },
                "runtime": {"type": "object", "properties": {"name": _STRING}},
                "path": _STRING,
                "schemaPath": _STRING,
                "gpu": {"type": "string", "enum": ["required", "preferred"]},
                "protocolVersion": _STRING,
                "storage": {
                    "type": "object",
                    "properties": {
                        "key": _STRING,
                        "path": _STRING,
                        "schemaPath": _STRING,
                        "parameters": {"type": "object", "additionalProperties": _STRING},
                        "s3": {
                            "type": "object",
                            "properties": {"secretKey": _STRING, "bucket": _STRING},
                        },
                    },
                },
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "available": {"type": "boolean"},
                "transitionStatus": {
                    "type": "string",
                    "enum": ["UpToDate", "InProgress", "BlockedByFailedLoad", "InvalidSpec"],
                },
                "activeModelState": {"type": "string", "enum": _MODEL_STATES},
                "targetModelState": {"type": "string", "enum": _MODEL_STATES},
                "lastFailureInfo": {
                    "type": "object",
                    "properties": {
                        "location": _STRING,
                        "reason": _STRING,
                        "message": _STRING,
                        "modelId": _STRING,
                        "time": {"type": "string", "format": "date-time"},
                    },
                },
                "totalCopies": {"type": "integer"},
                "failedCopies": {"type": "integer"},
                "grpcEndpoint": _STRING,
                "httpEndpoint": _STRING,
            },
        },
    },
}

_RUNTIME_SPEC: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "supportedModelFormats": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": _STRING,
                    "version": _STRING,
                    "autoSelect": {"type": "boolean"},
                },
            },
        },
        "multiModel": {"type": "boolean"},
        "disabled": {"type": "boolean"},
        "replicas": {"type": "integer"},
        "containers": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    },
}


def _crd(
    kind: str, plural: str, scope: str, schema: dict[str, Any], short: list[str]
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
                "shortNames": short,
            },
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def _runtime_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "apiVersion": _STRING,
            "kind": _STRING,
            "metadata": {"type": "object"},
            "spec": _RUNTIME_SPEC,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }


MINIMAL: tuple[dict[str, Any], ...] = (
    _crd("Predictor", "predictors", "Namespaced", _PREDICTOR_SCHEMA, ["pred"]),
    _crd("ServingRuntime", "servingruntimes", "Namespaced", _runtime_schema(), ["sr"]),
    _crd("ClusterServingRuntime", "clusterservingruntimes", "Cluster", _runtime_schema(), []),
)


def from_deploy() -> list[dict[str, Any]]:
    """The CRDs in ``deploy/crd/`` and below it (KServe's InferenceService is
    in ``deploy/crd/inferenceservice``); empty if that folder does not exist."""
    docs: list[dict[str, Any]] = []
    for path in sorted(CRD_DIR.rglob("*.yaml")) if CRD_DIR.is_dir() else []:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def load() -> list[dict[str, Any]]:
    """The project's CRDs if ``deploy/crd/`` defines all three kinds, else
    :data:`MINIMAL` (with a warning if the files are there but do not parse:
    ``tests/deploy`` reports what is wrong with them)."""
    try:
        deployed = from_deploy()
    except yaml.YAMLError as e:
        warnings.warn(f"deploy/crd does not parse ({e}); using the minimal CRDs", stacklevel=2)
        deployed = []
    kinds = {d.get("spec", {}).get("names", {}).get("kind") for d in deployed}
    if all(k in kinds for k in KINDS):
        return deployed
    return [dict(c) for c in MINIMAL]
