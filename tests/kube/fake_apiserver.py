"""A stand-in Kubernetes API server that speaks the real REST and watch protocol.

Why it exists: the controller (:mod:`kube.controller`) is a kopf
operator, and what breaks operators is the API server's semantics, not their
own Python: a stale ``resourceVersion`` answered with 409, a status written
through the main resource silently dropped, an object that lingers with a
``deletionTimestamp`` until its last finalizer goes, a watch that must resume
exactly where it stopped or be told 410 Gone. No kube-apiserver, k3s, kind
or envtest can run on the project's machines (RUNTIMES.md), and the
emulators on PyPI assign no resource versions and mix status into objects. So
this module implements the protocol itself, on aiohttp, and the tests drive it
with the same clients production uses: kopf and the official ``kubernetes``
client.

What it serves, as the real server does:

- **Discovery**: ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>`` and
  ``/apis/<group>/<version>``, built from the built-in kinds below and from
  every CustomResourceDefinition created (at start-up or later, through
  ``apiextensions.k8s.io/v1``), with their ``/status`` subresources, short
  names and scope. ``/version`` too.
- **Built-in kinds**: v1 Namespaces, ConfigMaps, Secrets, Services,
  ServiceAccounts, Events; apps/v1 Deployments (with the real API server's
  checks: a selector that matches the template's labels and cannot change,
  named containers with images, volume mounts of declared volumes);
  coordination.k8s.io/v1 Leases; apiextensions.k8s.io/v1 CRDs.
- **CRUD** with one global ``resourceVersion`` counter, ``uid``,
  ``creationTimestamp``, ``generation`` (bumped when anything but metadata and
  status changes), ``generateName``, no-op writes that change nothing (no new
  version, no event), 404 / 409 AlreadyExists / 409 Conflict on a stale
  ``resourceVersion`` (and 422 when a custom resource is updated without one),
  400 on a mismatched name or namespace, 404 for a missing namespace.
- **Status subresource**: writes to the main resource keep the stored status,
  writes to ``/status`` keep everything else; status is dropped on create.
- **Patches**: JSON merge patch (RFC 7386), JSON patch (RFC 6902, a failed
  ``test`` is a 422, as kopf expects), strategic merge patch on built-in kinds
  (applied as a merge patch: lists are replaced, not merged by key) and 415
  for it on custom resources, as the real server answers.
- **Deletion**: an object with finalizers gets ``deletionTimestamp`` and stays
  until an update removes its last finalizer; no finalizer may be added
  meanwhile (422); preconditions in DeleteOptions (409); dependents named by
  ``ownerReferences`` are garbage-collected in the background (or orphaned with
  ``propagationPolicy: Orphan``) once all their owners are gone.
- **Custom resources are validated** against their CRD's ``openAPIV3Schema``
  (converted for ``jsonschema``: ``nullable``, ``x-kubernetes-int-or-string``),
  after pruning unknown fields (kept under
  ``x-kubernetes-preserve-unknown-fields``; reported in a ``Warning`` header,
  or a 400 with ``fieldValidation=Strict``) and applying ``default``s; a
  violation is a 422 ``Invalid`` with the field paths, as kubectl shows them.
- **Watches** (``?watch=true``): from a ``resourceVersion`` they replay the
  retained history after it, then stream live; with none (or ``0``) they start
  with ADDED events for what exists; ``sendInitialEvents=true`` ends that
  listing with the ``k8s.io/initial-events-end`` bookmark; a version older
  than the retained history gets the real server's in-stream ERROR event with
  a 410 ``Expired`` Status; ``timeoutSeconds`` ends the stream; BOOKMARKs come
  every ``bookmark_interval`` seconds when asked for; label selectors turn a
  change that moves an object into or out of the selection into ADDED or
  DELETED, as the watch cache does.
- **Lists** with label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``,
  exists, ``!``), field selectors on ``metadata.name`` and
  ``metadata.namespace``, and ``limit`` / ``continue`` pages.
- A bearer token, if one is set (401 otherwise).
- Every request is counted in RBAC's terms (:class:`Request`: the client's
  User-Agent, verb, group, resource, namespaced or not), so a test can check
  that a client's Role and ClusterRole allow everything it did.

What it leaves out: authorization (every authenticated request is allowed),
admission webhooks, server-side apply, conversion between CRD versions (every
served version returns the stored object under its own apiVersion), the
Table and protobuf encodings, pods and every controller-manager loop other
than garbage collection (a Deployment gets no ReplicaSets and no status), and
consistent snapshots for ``continue`` pages (a later page shows later data).

The server runs on its own event loop in a thread, like a real one in its own
process: :meth:`FakeApiServer.start` returns once it listens on a free
127.0.0.1 port.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import copy
import dataclasses
import datetime
import json
import random
import re
import string
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import jsonschema  # type: ignore[import-untyped]
from aiohttp import web

_T = TypeVar("_T")

Obj = dict[str, Any]

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SERVER_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "managedFields",
    "selfLink",
)


class ApiError(Exception):
    """An error answer: a ``Status`` object with this HTTP code and reason."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


@dataclasses.dataclass(frozen=True)
class ResourceType:
    """One resource of one group version, as discovery lists it."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    schema: Mapping[str, Any] | None = None
    """The ``openAPIV3Schema`` of a custom resource."""
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Where objects are stored: every version of a resource shares it."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """``plural.group`` as error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[Obj]:
        main: Obj = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        subs = [
            {
                "name": f"{self.plural}/{sub}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }
            for sub in sorted(self.subresources)
        ]
        return [main, *subs]


def _builtin(
    group: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    status: bool = False,
) -> ResourceType:
    return ResourceType(
        group=group,
        version="v1",
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        namespaced=namespaced,
        short_names=short,
        subresources=frozenset({"status"}) if status else frozenset(),
    )


BUILTINS: tuple[ResourceType, ...] = (
    _builtin("", "namespaces", "Namespace", namespaced=False, short=("ns",), status=True),
    _builtin("", "configmaps", "ConfigMap", short=("cm",)),
    _builtin("", "secrets", "Secret"),
    _builtin("", "services", "Service", short=("svc",), status=True),
    _builtin("", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _builtin("", "events", "Event", short=("ev",)),
    _builtin("apps", "deployments", "Deployment", short=("deploy",), status=True),
    _builtin("coordination.k8s.io", "leases", "Lease"),
    _builtin(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=("crd", "crds"),
        status=True,
    ),
)


def crd_resource_types(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition, as resource types."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        subresources = frozenset((v.get("subresources") or {}).keys())
        out.append(
            ResourceType(
                group=str(spec["group"]),
                version=str(v["name"]),
                plural=str(names["plural"]),
                singular=str(names.get("singular") or str(names["kind"]).lower()),
                kind=str(names["kind"]),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subresources & {"status", "scale"},
                schema=(v.get("schema") or {}).get("openAPIV3Schema"),
                custom=True,
            )
        )
    return out


# -- label and field selectors ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    op: str
    """``=``, ``!=``, ``in``, ``notin``, ``exists`` or ``!``."""
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # != and notin


def parse_label_selector(text: str) -> tuple[Requirement, ...]:
    """Requirements of a label selector string; 400 if it does not parse."""
    reqs = []
    for part in _split_selector(text):
        if m := re.fullmatch(r"\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*", part):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := re.fullmatch(r"\s*([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)\s*", part):
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append(Requirement(m.group(1), op, frozenset({m.group(3)})))
        elif m := re.fullmatch(r"\s*!\s*([\w./-]+)\s*", part):
            reqs.append(Requirement(m.group(1), "!"))
        elif m := re.fullmatch(r"\s*([\w./-]+)\s*", part):
            reqs.append(Requirement(m.group(1), "exists"))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
    return tuple(reqs)


def _split_selector(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p for p in parts if p.strip()]


def parse_field_selector(text: str) -> tuple[tuple[str, str, str], ...]:
    """``(field, op, value)`` of a field selector on metadata.name/namespace."""
    out = []
    for part in _split_selector(text):
        m = re.fullmatch(r"\s*([\w.]+)\s*(==|=|!=)\s*(\S*)\s*", part)
        if not m or m.group(1) not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'field label not supported: "{part.strip()}"')
        out.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Filter:
    """Which objects a list or watch sees."""

    namespace: str = ""
    labels: tuple[Requirement, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()

    def matches(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace and meta.get("namespace", "") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        if not all(r.matches(labels) for r in self.labels):
            return False
        for field, op, value in self.fields:
            actual = meta.get(field.removeprefix("metadata."), "")
            if (actual == value) != (op == "="):
                return False
        return True


# -- patches -------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class PatchTestFailed(Exception):
    """A JSON patch ``test`` operation did not hold."""


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} does not start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    cur = doc
    for t in tokens[:-1]:
        cur = cur[int(t)] if isinstance(cur, list) else cur[t]
    return cur, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    cur = doc
    for t in _pointer(path):
        cur = cur[int(t)] if isinstance(cur, list) else cur[t]
    return cur


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens)
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            index = int(last)
            if not 0 <= index <= len(parent):
                raise IndexError(f"index {index} out of range")
            parent.insert(index, value)
    else:
        parent[last] = value
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise ValueError("cannot remove the whole document")
    parent, last = _parent(doc, tokens)
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
    return doc


def json_patch(doc: Any, ops: Sequence[Mapping[str, Any]]) -> Any:
    """RFC 6902 JSON patch; :class:`PatchTestFailed` when a ``test`` fails,
    ``KeyError``/``IndexError``/``ValueError`` when a path is wrong."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op["op"], op["path"]
        if kind == "test":
            try:
                actual = _get(doc, path)
            except (KeyError, IndexError, ValueError, TypeError):
                raise PatchTestFailed(f"path {path!r} does not exist") from None
            if actual != op.get("value"):
                raise PatchTestFailed(
                    f"testing value {path} failed: {json.dumps(op.get('value'))} is not "
                    f"{json.dumps(actual)}"
                )
        elif kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            doc = _remove(doc, path) if _pointer(path) else doc
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op["from"]))
            if kind == "move":
                doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        else:
            raise ValueError(f"unknown JSON patch operation {kind!r}")
    return doc


# -- schemas -------------------------------------------------------------------------


_OPENAPI_ONLY = ("nullable", "default", "format", "example", "externalDocs", "description")


def to_json_schema(schema: Mapping[str, Any]) -> Obj:
    """An OpenAPI v3 structural schema as a JSON Schema (draft 4) for jsonschema."""
    out: Obj = {}
    for k, v in schema.items():
        if k in ("properties", "patternProperties"):
            out[k] = {name: to_json_schema(sub) for name, sub in v.items()}
        elif k in ("items", "additionalProperties", "not") and isinstance(v, Mapping):
            out[k] = to_json_schema(v)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [to_json_schema(sub) for sub in v]
        elif k in (
            "nullable",
            "default",
            "format",
            "example",
            "externalDocs",
            "description",
        ) or k.startswith("x-kubernetes-"):
            continue
        else:
            out[k] = v
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        either = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
        out = {"allOf": [out, either]} if "anyOf" in out else {**out, **either}
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def prune(value: Any, schema: Mapping[str, Any], path: str, unknown: list[str]) -> Any:
    """``value`` without the fields ``schema`` does not declare (and without
    nulls where the schema is not nullable), as the API server decodes a
    custom resource; the dropped fields' paths are added to ``unknown``."""
    if isinstance(value, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        if props is None and addl is None and (preserve or schema.get("type") != "object"):
            return value
        out = {}
        for k, v in value.items():
            sub_path = f"{path}.{k}" if path else k
            sub = (props or {}).get(k)
            if sub is None and isinstance(addl, Mapping):
                sub = addl
            if sub is None:
                if preserve or addl is True:
                    out[k] = v
                else:
                    unknown.append(sub_path)
                continue
            if v is None and not sub.get("nullable"):
                continue
            out[k] = prune(v, sub, sub_path, unknown)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [prune(x, schema["items"], f"{path}[{i}]", unknown) for i, x in enumerate(value)]
    return value


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` with the schema's ``default`` values filled in where absent."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        out = dict(value)
        for k, sub in props.items():
            if k not in out and "default" in sub:
                out[k] = copy.deepcopy(sub["default"])
            if k in out:
                out[k] = apply_defaults(out[k], sub)
        addl = schema.get("additionalProperties")
        if isinstance(addl, Mapping):
            for k, v in out.items():
                if k not in props:
                    out[k] = apply_defaults(v, addl)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [apply_defaults(x, schema["items"]) for x in value]
    return value


def _field_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def schema_errors(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Violations of ``schema`` as the API server words them
    (``spec.modelType.name: Required value``)."""
    body = {k: v for k, v in obj.items() if k != "metadata"}
    js = to_json_schema(schema)
    js.get("properties", {}).pop("metadata", None)
    out = []
    validator = jsonschema.Draft4Validator(js)
    for err in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
        path = _field_path(err.absolute_path)
        if err.validator == "required":
            m = re.search(r"'(.+?)' is a required property", err.message)
            missing = m.group(1) if m else "?"
            out.append(f"{path + '.' if path else ''}{missing}: Required value")
        elif err.validator == "type":
            out.append(
                f"{path}: Invalid value: {json.dumps(_type_name(err.instance))}: {path} in body "
                f"must be of type {err.validator_value}: {json.dumps(err.instance)}"
            )
        elif err.validator == "enum":
            supported = ", ".join(json.dumps(v) for v in err.validator_value)
            out.append(
                f"{path}: Unsupported value: {json.dumps(err.instance)}: "
                f"supported values: {supported}"
            )
        else:
            out.append(f"{path}: Invalid value: {json.dumps(err.instance)}: {err.message}")
    return out


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def _deployment_errors(old: Mapping[str, Any] | None, obj: Mapping[str, Any]) -> list[str]:
    """The apps/v1 Deployment checks of the real API server that catch
    mistakes in a generated manifest."""
    errs: list[str] = []
    spec = obj.get("spec") or {}
    selector = spec.get("selector") or {}
    match = selector.get("matchLabels") or {}
    if not match and not selector.get("matchExpressions"):
        errs.append("spec.selector: Required value")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if match and any(labels.get(k) != v for k, v in match.items()):
        errs.append(
            f"spec.template.metadata.labels: Invalid value: {json.dumps(labels)}: "
            "`selector` does not match template `labels`"
        )
    if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
        errs.append(f"spec.selector: Invalid value: {json.dumps(selector)}: field is immutable")
    pod = template.get("spec") or {}
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    containers = pod.get("containers") or []
    if not containers:
        errs.append("spec.template.spec.containers: Required value")
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(pod.get(kind) or []):
            where = f"spec.template.spec.{kind}[{i}]"
            name = c.get("name") or ""
            if not _DNS_LABEL.match(name):
                errs.append(f"{where}.name: Invalid value: {json.dumps(name)}: a DNS-1123 label")
            elif name in seen:
                errs.append(f"{where}.name: Duplicate value: {json.dumps(name)}")
            seen.add(name)
            if not c.get("image"):
                errs.append(f"{where}.image: Required value")
            for j, m in enumerate(c.get("volumeMounts") or []):
                if m.get("name") not in volumes:
                    errs.append(
                        f"{where}.volumeMounts[{j}].name: Not found: {json.dumps(m.get('name'))}"
                    )
            for j, e in enumerate(c.get("env") or []):
                if not e.get("name"):
                    errs.append(f"{where}.env[{j}].name: Required value")
            for j, p in enumerate(c.get("ports") or []):
                port = p.get("containerPort")
                if not isinstance(port, int) or not 0 < port < 65536:
                    errs.append(
                        f"{where}.ports[{j}].containerPort: Invalid value: {json.dumps(port)}: "
                        "must be between 1 and 65535, inclusive"
                    )
    return errs


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _strip_server_fields(meta: Mapping[str, Any]) -> Obj:
    return {k: v for k, v in meta.items() if k not in _SERVER_META}


# -- the server ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    """One request as RBAC sees it."""

    agent: str
    """The client: the first word of its User-Agent (``kopf``, ``OpenAPI-Generator``...)."""
    verb: str
    """``get``, ``list``, ``watch``, ``create``, ``update``, ``patch``, ``delete``..."""
    group: str
    resource: str
    """``plural`` or ``plural/subresource``."""
    namespaced: bool
    """Whether the request named a namespace (else it was cluster-wide)."""


def _verb(method: str, item: bool, watch: bool) -> str:
    if method == "GET":
        return "get" if item else ("watch" if watch else "list")
    if method == "DELETE":
        return "delete" if item else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


@dataclasses.dataclass(frozen=True)
class _Change:
    rv: int
    key: tuple[str, str]
    type: str
    old: Obj | None
    new: Obj


@dataclasses.dataclass
class _Watcher:
    key: tuple[str, str]
    filter: Filter
    queue: asyncio.Queue[_Change | None]


class FakeApiServer:
    """The stand-in API server. ``crds``: CustomResourceDefinition manifests
    created at start-up; ``namespaces``: namespaces that exist from the start;
    ``history``: how many changes are kept for resuming watches (older
    versions get 410 Gone); ``token``: a bearer token every request must
    carry (``None``: no authentication)."""

    def __init__(
        self,
        crds: Iterable[Mapping[str, Any]] = (),
        namespaces: Iterable[str] = ("default",),
        *,
        history: int = 10_000,
        bookmark_interval: float = 5.0,
        token: str | None = None,
    ) -> None:
        self._initial_crds = [copy.deepcopy(dict(c)) for c in crds]
        self._initial_namespaces = list(namespaces)
        self.history_size = history
        self.bookmark_interval = bookmark_interval
        self.token = token
        self._types: dict[tuple[str, str], dict[str, ResourceType]] = {}
        """(group, version) → plural → type."""
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        """(group, plural) → (namespace, name) → stored object."""
        self._rv = 0
        self._history: collections.deque[_Change] = collections.deque()
        self._compacted = 0
        """The newest version dropped from the history: watches must start after it."""
        self._watchers: list[_Watcher] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.requests: collections.Counter[Request] = collections.Counter()
        """What each client asked for, in RBAC's terms, for tests that check
        which permissions a client needs."""
        for rt in BUILTINS:
            self._register(rt)

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen on a free 127.0.0.1 port, serving from a thread of its own."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as e:
                started.set_exception(e)
                loop.close()
                return
            started.set_result(None)
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-apiserver", daemon=True)
        self._thread.start()
        started.result(30)

    def stop(self) -> None:
        """Close every watch and stop listening."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._thread = None

    async def _start(self) -> None:
        for ns in self._initial_namespaces:
            self._create(self._type("", "v1", "namespaces"), "", self._manifest("Namespace", ns))
        for crd in self._initial_crds:
            rt = self._type("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            self._create(rt, "", crd)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        for w in self._watchers:
            w.queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test helpers (any thread) ------------------------------------------------

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the server's loop (where the store lives) and return its result."""
        assert self._loop is not None
        done: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as e:
                done.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return done.result(30)

    def get(self, group: str, plural: str, name: str, namespace: str = "") -> Obj | None:
        """A copy of a stored object, or ``None``."""
        return self.call(
            lambda: copy.deepcopy(self._objects.get((group, plural), {}).get((namespace, name)))
        )

    def objects(self, group: str, plural: str, namespace: str = "") -> list[Obj]:
        """Copies of the stored objects of one resource (one namespace, if given)."""

        def pick() -> list[Obj]:
            items = self._objects.get((group, plural), {})
            return [
                copy.deepcopy(o)
                for (ns, _), o in sorted(items.items())
                if ns == namespace or not namespace
            ]

        return self.call(pick)

    @property
    def resource_version(self) -> int:
        return self.call(lambda: self._rv)

    def compact(self) -> int:
        """Forget the whole change history, as etcd's compaction does: a watch
        from any version before now gets 410 Gone. Returns the current version."""

        def run() -> int:
            self._compacted = self._rv
            self._history.clear()
            return self._rv

        return self.call(run)

    def kubeconfig(self, namespace: str = "default") -> Obj:
        """A kubeconfig document for this server."""
        user: Obj = {"token": self.token} if self.token else {}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }

    # -- types -------------------------------------------------------------------

    def _register(self, rt: ResourceType) -> None:
        self._types.setdefault((rt.group, rt.version), {})[rt.plural] = rt
        self._objects.setdefault(rt.key, {})

    def _unregister_group_plural(self, group: str, plural: str) -> None:
        for gv in list(self._types):
            if gv[0] == group:
                self._types[gv].pop(plural, None)
                if not self._types[gv]:
                    del self._types[gv]

    def _type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self._types.get((group, version), {}).get(plural)
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt

    @staticmethod
    def _manifest(kind: str, name: str) -> Obj:
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}

    # -- HTTP --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if self.token is not None:
                auth = request.headers.get("Authorization", "")
                if auth != f"Bearer {self.token}":
                    raise ApiError(401, "Unauthorized", "Unauthorized")
            return await self._route(request)
        except ApiError as e:
            return web.json_response(e.status(), status=e.code)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        segs = [s for s in request.path.split("/") if s]
        if segs == ["version"]:
            return web.json_response(
                {
                    "major": "1",
                    "minor": "33",
                    "gitVersion": "v1.33.0-meshserve-fake",
                    "platform": "linux/amd64",
                }
            )
        if segs == ["api"]:
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                    ],
                }
            )
        if segs == ["apis"]:
            return web.json_response(
                {"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()}
            )
        if len(segs) >= 2 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 2 and segs[0] == "apis":
            if len(segs) == 2:
                for g in self._groups():
                    if g["name"] == segs[1]:
                        return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **g})
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        types = self._types.get((group, version))
        if types is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            resources = [
                r for rt in sorted(types.values(), key=lambda t: t.plural) for r in rt.discovery()
            ]
            return web.json_response(
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version,
                    "resources": resources,
                }
            )
        namespace = ""
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and rest[2] in types
            and types[rest[2]].namespaced
        ):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self._type(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if name and rt.namespaced and not namespace:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub and sub not in rt.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        params = request.query
        method = request.method
        self.requests[
            Request(
                agent=request.headers.get("User-Agent", "").split("/")[0],
                verb=_verb(method, bool(name), params.get("watch") in ("true", "1")),
                group=rt.group,
                resource=f"{rt.plural}/{sub}" if sub else rt.plural,
                namespaced=bool(namespace),
            )
        ] += 1
        if not name:
            if method == "GET":
                if params.get("watch") in ("true", "1"):
                    return await self._watch(request, rt, namespace)
                return web.json_response(self._list(rt, namespace, params))
            if method == "POST":
                body = await self._body(request)
                created, warnings = self._create_with_warnings(rt, namespace, body, params)
                response = self._written(rt, created, warnings)
                response.set_status(201)
                return response
            if method == "DELETE":
                return web.json_response(self._delete_collection(rt, namespace, params))
        else:
            if method == "GET":
                return web.json_response(self._out(rt, self._current(rt, namespace, name)))
            if method == "PUT":
                body = await self._body(request)
                obj, warnings = self._update(rt, namespace, name, body, sub, params)
                return self._written(rt, obj, warnings)
            if method == "PATCH":
                kind = request.content_type
                patch = await self._body(request, allow_list=True)
                obj, warnings = self._patch(rt, namespace, name, kind, patch, sub, params)
                return self._written(rt, obj, warnings)
            if method == "DELETE" and not sub:
                options = await self._body(request) if request.can_read_body else {}
                code, body = self._delete(rt, namespace, name, options, params)
                return web.json_response(body, status=code)
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    def _written(self, rt: ResourceType, obj: Obj, warnings: list[str]) -> web.Response:
        headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
        return web.json_response(self._out(rt, obj), headers=headers)

    async def _body(self, request: web.Request, allow_list: bool = False) -> Any:
        raw = await request.read()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(400, "BadRequest", f"the body is not JSON: {e}") from None
        if not isinstance(body, dict) and not (allow_list and isinstance(body, list)):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        return body

    def _groups(self) -> list[Obj]:
        by_group: dict[str, list[str]] = {}
        preferred: dict[str, str] = {}
        for group, version in self._types:
            if group:
                by_group.setdefault(group, []).append(version)
        for crd in self._objects.get(
            ("apiextensions.k8s.io", "customresourcedefinitions"), {}
        ).values():
            spec = crd.get("spec") or {}
            for v in spec.get("versions") or []:
                if v.get("storage"):
                    preferred[str(spec.get("group"))] = str(v["name"])
        out = []
        for group in sorted(by_group):
            versions = sorted(by_group[group])
            pref = preferred.get(group, versions[0])
            out.append(
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                    "preferredVersion": {"groupVersion": f"{group}/{pref}", "version": pref},
                }
            )
        return out

    # -- reads -------------------------------------------------------------------

    def _out(self, rt: ResourceType, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def _current(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self._objects[rt.key].get((namespace, name))
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{rt.qualified} "{name}" not found',
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        return obj

    def _filter(self, namespace: str, params: Mapping[str, str]) -> Filter:
        return Filter(
            namespace=namespace,
            labels=parse_label_selector(params.get("labelSelector", "")),
            fields=parse_field_selector(params.get("fieldSelector", "")),
        )

    def _list(self, rt: ResourceType, namespace: str, params: Mapping[str, str]) -> Obj:
        flt = self._filter(namespace, params)
        items = sorted(
            ((k, o) for k, o in self._objects[rt.key].items() if flt.matches(o)),
            key=lambda kv: kv[0],
        )
        token = params.get("continue", "")
        if token:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(token.encode())))
            except (ValueError, TypeError):
                raise ApiError(400, "BadRequest", "invalid continue token") from None
            items = [(k, o) for k, o in items if k > after]
        limit = int(params.get("limit") or 0)
        meta: Obj = {"resourceVersion": str(self._rv)}
        if limit and len(items) > limit:
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps(list(items[-1][0])).encode()
            ).decode()
        out_items = []
        for _, o in items:
            item = self._out(rt, o)
            if not rt.custom:  # built-in lists carry no kind/apiVersion per item
                item.pop("kind", None)
                item.pop("apiVersion", None)
            out_items.append(item)
        return {
            "apiVersion": rt.api_version,
            "kind": f"{rt.kind}List",
            "metadata": meta,
            "items": out_items,
        }

    # -- writes ------------------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, rt: ResourceType, type_: str, old: Obj | None, new: Obj) -> None:
        change = _Change(
            int(new["metadata"]["resourceVersion"]),
            rt.key,
            type_,
            copy.deepcopy(old),
            copy.deepcopy(new),
        )
        self._history.append(change)
        while len(self._history) > self.history_size:
            self._compacted = self._history.popleft().rv
        for w in self._watchers:
            if w.key == rt.key:
                w.queue.put_nowait(change)

    def _check_object(self, rt: ResourceType, body: Mapping[str, Any]) -> Obj:
        obj = copy.deepcopy(dict(body))
        kind = obj.get("kind")
        if kind is not None and kind != rt.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the object provided is unrecognized (must be of type {rt.kind}): kind {kind!r}",
            )
        api_version = obj.get("apiVersion")
        if isinstance(api_version, str) and _group_of(api_version) != rt.group:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.api_version})",
            )
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        return obj

    def _invalid(self, rt: ResourceType, name: str, errs: list[str]) -> ApiError:
        shown = errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]"
        group = f".{rt.group}" if rt.group else ""
        return ApiError(
            422,
            "Invalid",
            f'{rt.kind}{group} "{name}" is invalid: {shown}',
            {
                "name": name,
                "group": rt.group,
                "kind": rt.kind,
                "causes": [
                    {"reason": "FieldValueInvalid", "message": e, "field": e.split(":", 1)[0]}
                    for e in errs
                ],
            },
        )

    def _admit(
        self, rt: ResourceType, old: Obj | None, obj: Obj, params: Mapping[str, str]
    ) -> tuple[Obj, list[str]]:
        """Prune, default and validate an object about to be stored."""
        meta = obj["metadata"]
        name = str(meta.get("name", ""))
        errs = []
        for field in ("labels", "annotations"):
            value = meta.get(field)
            if value is not None and (
                not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())
            ):
                errs.append(f"metadata.{field}: Invalid value: must be a map of strings")
        finalizers = meta.get("finalizers")
        if finalizers is not None and (
            not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)
        ):
            errs.append("metadata.finalizers: Invalid value: must be a list of strings")
        warnings: list[str] = []
        if rt.custom and rt.schema is not None:
            unknown: list[str] = []
            pruned = prune(
                {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")},
                rt.schema,
                "",
                unknown,
            )
            if unknown and params.get("fieldValidation") == "Strict":
                raise ApiError(
                    400,
                    "BadRequest",
                    "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown),
                )
            warnings = [f'unknown field "{u}"' for u in unknown]
            obj = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta, **pruned}
            obj = apply_defaults(obj, rt.schema)
            errs += schema_errors(obj, rt.schema)
        elif rt.key == ("apps", "deployments"):
            errs += _deployment_errors(old, obj)
        if errs:
            raise self._invalid(rt, name, errs)
        return obj, warnings

    def _create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Mapping[str, Any],
        params: Mapping[str, str] | None = None,
    ) -> Obj:
        obj, _ = self._create_with_warnings(rt, namespace, body, params or {})
        return obj

    def _create_with_warnings(
        self, rt: ResourceType, namespace: str, body: Mapping[str, Any], params: Mapping[str, str]
    ) -> tuple[Obj, list[str]]:
        obj = self._check_object(rt, body)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(
                400, "BadRequest", "resourceVersion should not be set on objects to be created"
            )
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            name = meta["name"] = f"{meta['generateName']}{suffix}"
        if not name:
            raise self._invalid(
                rt, "", ["metadata.name: Required value: name or generateName is required"]
            )
        pattern = _DNS_LABEL if rt.plural == "namespaces" else _DNS_SUBDOMAIN
        if not isinstance(name, str) or len(name) > 253 or not pattern.match(name):
            raise self._invalid(
                rt,
                str(name),
                [
                    f"metadata.name: Invalid value: {json.dumps(name)}: "
                    "must be a lowercase RFC 1123 name"
                ],
            )
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            if not namespace:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if ("", namespace) not in self._objects[("", "namespaces")]:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if (namespace, name) in self._objects[rt.key]:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.qualified} "{name}" already exists',
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        obj["metadata"] = meta = _strip_server_fields(meta)
        if "status" in rt.subresources and rt.plural != "customresourcedefinitions":
            obj.pop("status", None)
        obj, warnings = self._admit(rt, None, obj, params)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if rt.custom or "spec" in obj:
            meta["generation"] = 1
        if rt.plural == "customresourcedefinitions":
            self._define(obj)
        meta["resourceVersion"] = str(self._next_rv())
        self._objects[rt.key][(namespace, name)] = obj
        self._emit(rt, "ADDED", None, obj)
        return obj, warnings

    def _define(self, crd: Obj) -> None:
        """Serve a CRD's resource (and mark it Established, as the real server does)."""
        try:
            types = crd_resource_types(crd)
        except (KeyError, TypeError) as e:
            raise self._invalid(
                self._type("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
                crd["metadata"].get("name", ""),
                [f"spec: Invalid value: missing {e}"],
            ) from None
        for rt in types:
            self._register(rt)
        names = (crd.get("spec") or {}).get("names") or {}
        crd["status"] = {
            "acceptedNames": dict(names),
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "lastTransitionTime": _now(),
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "lastTransitionTime": _now(),
                },
            ],
            "storedVersions": [
                v["name"] for v in crd["spec"].get("versions", []) if v.get("storage")
            ],
        }

    def _update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        sub: str,
        params: Mapping[str, str],
    ) -> tuple[Obj, list[str]]:
        cur = self._current(rt, namespace, name)
        new = self._check_object(rt, body)
        meta = new["metadata"]
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on "
                f"the URL ({name})",
            )
        rv = meta.get("resourceVersion")
        if not rv and rt.custom:
            raise self._invalid(
                rt,
                name,
                ["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"],
            )
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise self._conflict(rt, name)
        uid = meta.get("uid")
        if uid and uid != cur["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                f"{cur['metadata']['uid']}",
            )
        return self._write(rt, cur, new, sub, params)

    def _conflict(self, rt: ResourceType, name: str) -> ApiError:
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            {"name": name, "group": rt.group, "kind": rt.plural},
        )

    def _patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        sub: str,
        params: Mapping[str, str],
    ) -> tuple[Obj, list[str]]:
        cur = self._current(rt, namespace, name)
        base = copy.deepcopy(cur)
        if content_type == "application/merge-patch+json" or (
            content_type == "application/strategic-merge-patch+json" and not rt.custom
        ):
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            patched = merge_patch(base, patch)
        elif content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a JSON array")
            try:
                patched = json_patch(base, patch)
            except PatchTestFailed as e:
                raise self._invalid(rt, name, [str(e)]) from None
            except (KeyError, IndexError, ValueError, TypeError) as e:
                raise self._invalid(rt, name, [f"the patch cannot be applied: {e!r}"]) from None
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json"
                + ("" if rt.custom else ", application/strategic-merge-patch+json")
                + f" (got {content_type!r})",
            )
        if not isinstance(patched, dict):
            raise self._invalid(rt, name, ["the patched object is not an object"])
        patched_meta = patched.get("metadata") or {}
        if patched_meta.get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise self._conflict(rt, name)
        return self._write(rt, cur, self._check_object(rt, patched), sub, params)

    def _write(
        self, rt: ResourceType, cur: Obj, new: Obj, sub: str, params: Mapping[str, str]
    ) -> tuple[Obj, list[str]]:
        """Store an update of ``cur`` (main resource or ``/status``)."""
        cur_meta = cur["metadata"]
        if sub == "status":
            merged = copy.deepcopy(cur)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
        else:
            merged = new
            meta = merged["metadata"] = {
                **{k: v for k, v in new["metadata"].items() if k not in _SERVER_META},
                **{k: cur_meta[k] for k in _SERVER_META if k in cur_meta},
            }
            meta["name"] = cur_meta["name"]
            if "namespace" in cur_meta:
                meta["namespace"] = cur_meta["namespace"]
            if "status" in rt.subresources:
                if "status" in cur:
                    merged["status"] = copy.deepcopy(cur["status"])
                else:
                    merged.pop("status", None)
            if cur_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(cur_meta.get("finalizers") or [])
                if added:
                    raise self._invalid(
                        rt,
                        cur_meta["name"],
                        [
                            "metadata.finalizers: Forbidden: no new finalizers can be added if the "
                            f"object is being deleted, found new finalizers {sorted(added)}"
                        ],
                    )
        merged, warnings = self._admit(rt, cur, merged, params)
        if merged == cur:
            return cur, warnings  # a no-op write: no new version, no event
        meta = merged["metadata"]
        if sub != "status" and "generation" in cur_meta and _spec_of(merged) != _spec_of(cur):
            meta["generation"] = int(cur_meta["generation"]) + 1
        meta["resourceVersion"] = str(self._next_rv())
        key = (meta.get("namespace", ""), meta["name"])
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self._objects[rt.key][key]
            self._emit(rt, "DELETED", cur, merged)
            self._removed(merged, "Background")
            return merged, warnings
        self._objects[rt.key][key] = merged
        if rt.plural == "customresourcedefinitions":
            self._define(merged)
        self._emit(rt, "MODIFIED", cur, merged)
        return merged, warnings

    def _delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        options: Mapping[str, Any],
        params: Mapping[str, str],
    ) -> tuple[int, Obj]:
        cur = self._current(rt, namespace, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{cur['metadata']['uid']}",
            )
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]
        ):
            raise self._conflict(rt, name)
        policy = str(
            options.get("propagationPolicy") or params.get("propagationPolicy") or "Background"
        )
        meta = cur["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                new = copy.deepcopy(cur)
                new["metadata"]["deletionTimestamp"] = _now()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new["metadata"]["resourceVersion"] = str(self._next_rv())
                self._objects[rt.key][(namespace, name)] = new
                self._emit(rt, "MODIFIED", cur, new)
                cur = new
            return 200, self._out(rt, cur)
        gone = copy.deepcopy(cur)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        del self._objects[rt.key][(namespace, name)]
        self._emit(rt, "DELETED", cur, gone)
        self._removed(gone, policy)
        if rt.custom:
            return 200, self._out(rt, gone)
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": meta["uid"]},
        }

    def _delete_collection(
        self, rt: ResourceType, namespace: str, params: Mapping[str, str]
    ) -> Obj:
        flt = self._filter(namespace, params)
        for (ns, name), obj in sorted(self._objects[rt.key].items()):
            if flt.matches(obj):
                self._delete(rt, ns, name, {}, params)
        return self._list(rt, namespace, {})

    def _all_types(self) -> Iterator[ResourceType]:
        seen = set()
        for types in self._types.values():
            for rt in types.values():
                if rt.key not in seen:
                    seen.add(rt.key)
                    yield rt

    def _removed(self, obj: Obj, policy: str) -> None:
        """After ``obj`` is gone: garbage-collect or orphan its dependents, and
        stop serving a deleted CRD's resource."""
        uid = obj["metadata"]["uid"]
        if obj.get("kind") == "CustomResourceDefinition":
            spec = obj.get("spec") or {}
            names = spec.get("names") or {}
            self._unregister_group_plural(str(spec.get("group")), str(names.get("plural")))
        live_uids = {o["metadata"]["uid"] for objs in self._objects.values() for o in objs.values()}
        for rt in list(self._all_types()):
            for (ns, name), dep in list(self._objects[rt.key].items()):
                refs = dep["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == uid for r in refs):
                    continue
                remaining = [r for r in refs if r.get("uid") != uid and r.get("uid") in live_uids]
                if policy == "Orphan" or remaining:
                    new = copy.deepcopy(dep)
                    kept = [r for r in refs if r.get("uid") != uid]
                    if kept:
                        new["metadata"]["ownerReferences"] = kept
                    else:
                        new["metadata"].pop("ownerReferences", None)
                    new["metadata"]["resourceVersion"] = str(self._next_rv())
                    self._objects[rt.key][(ns, name)] = new
                    self._emit(rt, "MODIFIED", dep, new)
                elif (ns, name) in self._objects[rt.key]:
                    self._delete(rt, ns, name, {}, {})

    # -- watches -----------------------------------------------------------------

    async def _watch(
        self, request: web.Request, rt: ResourceType, namespace: str
    ) -> web.StreamResponse:
        params = request.query
        flt = self._filter(namespace, params)
        since = params.get("resourceVersion", "")
        initial = params.get("sendInitialEvents") == "true"
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(params.get("timeoutSeconds") or 0) or None
        if since not in ("", "0"):
            try:
                since_rv = int(since)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from None
        else:
            since_rv = -1
        # Register before reading state: no await in between, so every later
        # change reaches the queue and none is replayed twice.
        watcher = _Watcher(rt.key, flt, asyncio.Queue())
        self._watchers.append(watcher)
        backlog: list[tuple[str, Obj]] = []
        expired = False
        if since_rv < 0 or initial:
            for _, obj in sorted(self._objects[rt.key].items()):
                if flt.matches(obj):
                    backlog.append(("ADDED", obj))
            if initial:
                backlog.append(("BOOKMARK", self._bookmark(rt, initial_end=True)))
        elif since_rv < self._compacted:
            expired = True
        else:
            for past in self._history:
                if past.key == rt.key and past.rv > since_rv:
                    seen = self._view(flt, past)
                    if seen is not None:
                        backlog.append(seen)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if expired:
                status = ApiError(
                    410, "Expired", f"too old resource version: {since_rv} ({self._compacted})"
                ).status()
                await self._send(response, "ERROR", status)
                return response
            for type_, obj in backlog:
                await self._send(
                    response, type_, self._out(rt, obj) if type_ != "BOOKMARK" else obj
                )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                if deadline is not None and now >= deadline:
                    break
                if request.transport is None or request.transport.is_closing():
                    break
                wait = min(
                    1.0, next_bookmark - now, *(() if deadline is None else (deadline - now,))
                )
                try:
                    change: _Change | None = await asyncio.wait_for(
                        watcher.queue.get(), max(0.0, wait)
                    )
                except TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark:
                        await self._send(response, "BOOKMARK", self._bookmark(rt))
                    if loop.time() >= next_bookmark:
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if change is None:
                    break
                seen = self._view(flt, change)
                if seen is not None:
                    await self._send(response, seen[0], self._out(rt, seen[1]))
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            self._watchers.remove(watcher)
        return response

    def _bookmark(self, rt: ResourceType, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(self._rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}

    @staticmethod
    def _view(flt: Filter, change: _Change) -> tuple[str, Obj] | None:
        """What a watch with this filter sees of a change, if anything."""
        now, before = flt.matches(change.new), flt.matches(change.old)
        if change.type == "ADDED":
            return ("ADDED", change.new) if now else None
        if change.type == "DELETED":
            return ("DELETED", change.new) if now or before else None
        if now and before:
            return ("MODIFIED", change.new)
        if now:
            return ("ADDED", change.new)
        if before:
            return ("DELETED", change.new)
        return None

    @staticmethod
    async def _send(response: web.StreamResponse, type_: str, obj: Obj) -> None:
        await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")


def _group_of(api_version: str) -> str:
    return api_version.split("/", maxsplit=1)[0] if "/" in api_version else ""


def _spec_of(obj: Mapping[str, Any]) -> Obj:
    """Everything that counts for ``generation``: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
