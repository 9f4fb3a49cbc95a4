"""A CustomResourceDefinition's schema, applied to the objects it defines.

The real server prunes a custom resource's unknown fields, fills in the
schema's defaults and refuses a violation with a 422 naming the field paths
(``spec.modelType.name: Required value``); a controller whose status writes
broke the CRD's schema would only find out in a cluster. The OpenAPI v3
structural schema is converted for ``jsonschema`` (``nullable``,
``x-kubernetes-int-or-string``) and the errors are worded as kubectl shows them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from tests.kube.apiserver.api_status import Obj

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
        elif k in _OPENAPI_ONLY or k.startswith("x-kubernetes-"):
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
