"""What the stand-in refuses to store, as the real server refuses it.

A controller that renders manifests learns of its mistakes at admission: a
Deployment whose selector does not match its template, a volume mount of a
volume nobody declared, a name that is not a DNS-1123 name, a custom
resource that breaks its CRD's schema. Every write passes through
:func:`admit` (and a create through :func:`name_errors`), which answer with
the real server's 400 or 422 and its wording, so a test fails where a
cluster would.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from tests.kube.apiserver import schemas
from tests.kube.apiserver.api_status import ApiError, Obj
from tests.kube.apiserver.resource_types import ResourceType

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def group_of(api_version: str) -> str:
    return api_version.split("/", maxsplit=1)[0] if "/" in api_version else ""


def check_object(rt: ResourceType, body: Mapping[str, Any]) -> Obj:
    """A copy of a written object, with its ``kind`` and ``apiVersion`` checked
    and set, and a ``metadata`` mapping; 400 if it is not of ``rt``."""
    obj = copy.deepcopy(dict(body))
    kind = obj.get("kind")
    if kind is not None and kind != rt.kind:
        raise ApiError(
            400,
            "BadRequest",
            f"the object provided is unrecognized (must be of type {rt.kind}): kind {kind!r}",
        )
    api_version = obj.get("apiVersion")
    if isinstance(api_version, str) and group_of(api_version) != rt.group:
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


def invalid(rt: ResourceType, name: str, errs: list[str]) -> ApiError:
    """The 422 ``Invalid`` answer listing ``errs`` (``field: problem``)."""
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


def name_errors(rt: ResourceType, name: object) -> list[str]:
    """What is wrong with a new object's name (a DNS-1123 label for a
    Namespace, a DNS-1123 subdomain otherwise)."""
    pattern = _DNS_LABEL if rt.plural == "namespaces" else _DNS_SUBDOMAIN
    if not isinstance(name, str) or len(name) > 253 or not pattern.match(name):
        return [
            f"metadata.name: Invalid value: {json.dumps(name)}: must be a lowercase RFC 1123 name"
        ]
    return []


def _metadata_errors(meta: Mapping[str, Any]) -> list[str]:
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
    return errs


def _admit_custom(
    rt: ResourceType, obj: Obj, params: Mapping[str, str]
) -> tuple[Obj, list[str], list[str]]:
    """Prune, default and validate a custom resource: the object, the
    warnings about pruned fields, and the schema's violations."""
    assert rt.schema is not None
    unknown: list[str] = []
    pruned = schemas.prune(
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
    obj = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": obj["metadata"],
        **pruned,
    }
    obj = schemas.apply_defaults(obj, rt.schema)
    return obj, warnings, schemas.schema_errors(obj, rt.schema)


def admit(
    rt: ResourceType, old: Obj | None, obj: Obj, params: Mapping[str, str]
) -> tuple[Obj, list[str]]:
    """Prune, default and validate an object about to be stored: the object
    to store and the warnings to send; 400 or 422 if it is refused."""
    name = str(obj["metadata"].get("name", ""))
    errs = _metadata_errors(obj["metadata"])
    warnings: list[str] = []
    if rt.custom and rt.schema is not None:
        obj, warnings, schema_errs = _admit_custom(rt, obj, params)
        errs += schema_errs
    elif rt.key == ("apps", "deployments"):
        errs += deployment_errors(old, obj)
    if errs:
        raise invalid(rt, name, errs)
    return obj, warnings


def deployment_errors(old: Mapping[str, Any] | None, obj: Mapping[str, Any]) -> list[str]:
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
