"""The CRDs are ones an API server accepts (structural schemas), and every
custom resource in deploy/ — the runtimes, the samples, and what each overlay
renders — is valid against them, checked as the API server would."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from tests.deploy import manifests
from tests.deploy.manifests import GROUP, Obj, Rendered, ident

KINDS = ("Predictor", "ServingRuntime", "ClusterServingRuntime")


def validation_errors(crds: Mapping[str, Obj], obj: Mapping[str, Any]) -> list[str]:
    """Why the API server would refuse (or prune part of) this custom resource."""
    crd = crds.get(obj.get("kind", ""))
    if crd is None:
        return [f"no CRD in deploy/crd defines kind {obj.get('kind')!r}"]
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    if group != crd["spec"]["group"]:
        return [f"apiVersion {obj.get('apiVersion')!r} is not of group {crd['spec']['group']}"]
    if version not in {v["name"] for v in crd["spec"]["versions"] if v["served"]}:
        return [f"version {version!r} is not served"]
    validator = jsonschema.Draft202012Validator(
        manifests.crd_schema(crd, version),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


# --- the CRDs themselves -------------------------------------------------------


def test_the_three_kinds_are_served_in_serving_kserve_io_v1alpha1(crds: dict[str, Obj]) -> None:
    assert sorted(crds) == sorted([*KINDS, "InferenceService"])  # KServe's: its own test
    crds = {kind: crds[kind] for kind in KINDS}
    scopes = {kind: crd["spec"]["scope"] for kind, crd in crds.items()}
    assert scopes == {
        "Predictor": "Namespaced",
        "ServingRuntime": "Namespaced",
        "ClusterServingRuntime": "Cluster",
    }
    for kind, crd in crds.items():
        names = crd["spec"]["names"]
        assert crd["metadata"]["name"] == f"{names['plural']}.{GROUP}"
        assert names["plural"] == kind.lower() + "s"
        ((version),) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}, f"{kind}: status subresource"


def _structural_problems(
    node: Mapping[str, Any], path: str, in_value_validation: bool
) -> Iterator[str]:
    """Kubernetes' rules for structural schemas, as the API server enforces them."""
    open_node = node.get("x-kubernetes-int-or-string") or node.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if in_value_validation:
        for key in ("type", "default", "additionalProperties", "nullable", "description"):
            if key in node:
                yield f"{path}: {key!r} inside allOf/anyOf/oneOf/not"
    elif "type" not in node and not open_node:
        yield f"{path}: no type"
    if "properties" in node and "additionalProperties" in node:
        yield f"{path}: both properties and additionalProperties"
    if node.get("x-kubernetes-int-or-string") and node.get("type"):
        yield f"{path}: int-or-string with a type"
    if "$ref" in node or "x-kubernetes-validations" in node:
        yield f"{path}: $ref / CEL cannot be checked offline"
    for name, sub in node.get("properties", {}).items():
        yield from _structural_problems(sub, f"{path}.{name}", in_value_validation)
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        yield from _structural_problems(additional, f"{path}.*", in_value_validation)
    if "items" in node:
        yield from _structural_problems(node["items"], f"{path}[]", in_value_validation)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key, []):
            # int-or-string's anyOf of the two types is the one allowed use of type.
            if not (node.get("x-kubernetes-int-or-string") and set(sub) == {"type"}):
                yield from _structural_problems(sub, f"{path}<{key}>", True)


@pytest.mark.parametrize("kind", KINDS)
def test_the_crd_schema_is_structural(crds: dict[str, Obj], kind: str) -> None:
    schema = crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert list(_structural_problems(schema, "", False)) == []
    # metadata may only be an object: the API server owns its schema.
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["properties"]["spec"]["type"] == "object"
    # kopf keeps its progress in status: unknown status fields must survive.
    assert schema["properties"]["status"].get("x-kubernetes-preserve-unknown-fields") is True


@pytest.mark.parametrize("kind", KINDS)
def test_every_default_in_the_crd_satisfies_its_own_schema(crds: dict[str, Obj], kind: str) -> None:
    schema = crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in manifests.schema_nodes(schema):
        if "default" in node:
            errors = list(
                jsonschema.Draft202012Validator(manifests.json_schema(node)).iter_errors(
                    node["default"]
                )
            )
            assert errors == [], f"{kind} {path}: default {node['default']!r}"


def _schema_at(schema: Mapping[str, Any], json_path: str) -> Mapping[str, Any] | None:
    node: Mapping[str, Any] | None = schema
    for part in json_path.lstrip(".").split("."):
        if node is None:
            return None
        name, star, _ = part.partition("[*]")
        node = node.get("properties", {}).get(name)
        if star and node is not None:
            node = node.get("items")
    return node


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_fields_of_the_right_type(crds: dict[str, Obj], kind: str) -> None:
    (version,) = crds[kind]["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    columns = version["additionalPrinterColumns"]
    assert columns[-1]["name"] == "Age"
    for col in columns:
        if col["jsonPath"] == ".metadata.creationTimestamp":
            assert col["type"] == "date"
            continue
        node = _schema_at(schema, col["jsonPath"])
        assert node is not None, f"{kind} column {col['name']}: {col['jsonPath']} not in schema"
        assert node["type"] == col["type"], f"{kind} column {col['name']}"


def test_predictor_columns_are_modelmesh_servings(crds: dict[str, Obj]) -> None:
    (version,) = crds["Predictor"]["spec"]["versions"]
    default_columns = [
        c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")
    ]
    assert default_columns == [
        "Type",
        "Available",
        "ActiveModel",
        "TargetModel",
        "Transition",
        "Age",
    ]


def test_serving_runtime_and_cluster_serving_runtime_share_one_schema(crds: dict[str, Obj]) -> None:
    def version(kind: str) -> Obj:
        versions: list[Obj] = crds[kind]["spec"]["versions"]
        assert len(versions) == 1
        return versions[0]

    assert version("ServingRuntime") == version("ClusterServingRuntime")


# --- custom resources in the tree -------------------------------------------------


def _custom_resources(rendered: dict[str, Rendered]) -> Iterator[tuple[str, Obj]]:
    for folder, r in sorted(rendered.items()):
        for obj in r.objects:
            if manifests.api_group(obj) == GROUP:
                yield f"deploy/{folder}: {ident(obj)}", obj
    # Files read alone (kubectl apply -f deploy/samples/x.yaml) too.
    for path in sorted(manifests.DEPLOY.rglob("*.yaml")):
        for obj in manifests.load_all(path.read_text()):
            if isinstance(obj, dict) and str(obj.get("apiVersion", "")).startswith(GROUP + "/"):
                yield f"{path.relative_to(manifests.REPO)}: {ident(obj)}", obj


def test_every_custom_resource_in_deploy_validates_against_its_crd(
    rendered: dict[str, Rendered], crds: dict[str, Obj]
) -> None:
    seen: set[str] = set()
    problems: list[str] = []
    for where, obj in _custom_resources(rendered):
        seen.add(obj["kind"])
        problems += [f"{where}: {p}" for p in validation_errors(crds, obj)]
    assert problems == []
    assert {"Predictor", "ClusterServingRuntime"} <= seen


PREDICTOR = """
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: iris
  namespace: meshserve
spec:
  modelType:
    name: sklearn
  storage:
    key: localMinIO
    path: sklearn/iris.joblib
"""


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda p: p["spec"].update(modelPath="x"), "'modelPath' was unexpected"),
        (lambda p: p["spec"]["storage"].update(secretKey="x"), "'secretKey' was unexpected"),
        (lambda p: p["spec"].update(gpu="yes"), "'yes' is not one of"),
        (lambda p: p["spec"].pop("modelType"), "'modelType' is a required property"),
        (lambda p: p["spec"]["modelType"].update(version=1.15), "1.15 is not of type 'string'"),
        (
            lambda p: p["spec"]["storage"].update(parameters={"bucket": 3}),
            "3 is not of type 'string'",
        ),
        (lambda p: p["spec"].update(protocolVersion="grpc-v3"), "'grpc-v3' is not one of"),
        (lambda p: p.update(apiVersion="serving.kserve.io/v1beta1"), "not served"),
        (lambda p: p["metadata"].update(name="Iris_Model"), "does not match"),
        (
            lambda p: p.update(status={"transitionStatus": "Done"}),
            "'Done' is not one of",
        ),
        (
            lambda p: p.update(status={"lastFailureInfo": {"reason": "Oops"}}),
            "'Oops' is not one of",
        ),
        (lambda p: p.update(status={"failedCopies": -1}), "-1 is less than the minimum"),
    ],
)
def test_the_schema_refuses_what_the_api_server_would(
    crds: dict[str, Obj], change: Any, complaint: str
) -> None:
    predictor = manifests.load(PREDICTOR)
    assert validation_errors(crds, predictor) == []
    broken = copy.deepcopy(predictor)
    change(broken)
    found = validation_errors(crds, broken)
    assert any(complaint in e for e in found), found


def test_a_status_as_the_controller_writes_it_validates_with_kopf_progress_kept(
    crds: dict[str, Obj],
) -> None:
    predictor = manifests.load(PREDICTOR)
    predictor["status"] = {
        "available": True,
        "activeModelState": "Loaded",
        "targetModelState": "FailedToLoad",
        "transitionStatus": "BlockedByFailedLoad",
        "lastFailureInfo": {
            "location": "meshserve-mlserver-1.x-7d9f-abcde",
            "reason": "ModelLoadFailed",
            "message": "model file missing",
            "modelId": "iris__ksp-0123456789",
            "time": "2026-11-25T10:04:05Z",
        },
        "totalCopies": 2,
        "failedCopies": 1,
        "grpcEndpoint": "grpc://meshserve.meshserve:8033",
        "httpEndpoint": "http://meshserve.meshserve:8008",
        "kopf": {"progress": {"register": {"started": "2026-11-25T10:04:00Z", "retries": 1}}},
    }
    assert validation_errors(crds, predictor) == []
    predictor["status"]["lastFailureInfo"]["time"] = "yesterday"
    assert validation_errors(crds, predictor) == [
        "status.lastFailureInfo.time: 'yesterday' is not a 'date-time'"
    ]


def test_no_runtime_means_invalid_spec_with_no_supporting_runtime(crds: dict[str, Obj]) -> None:
    """The failure status the controller writes for a model type nothing serves."""
    predictor = manifests.load(PREDICTOR)
    predictor["status"] = {
        "available": False,
        "activeModelState": "FailedToLoad",
        "targetModelState": "",
        "transitionStatus": "InvalidSpec",
        "lastFailureInfo": {"reason": "NoSupportingRuntime", "message": "no runtime serves 'sas'"},
        "failedCopies": 0,
    }
    assert validation_errors(crds, predictor) == []
