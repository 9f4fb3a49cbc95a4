"""Label and field selectors: which objects a list or a watch sees.

Controllers narrow what they watch (the runtime Deployments by their
``managed-by`` label, one Predictor by ``metadata.name``), and a watch whose
selector stops matching an object must see it leave. Parsing the selector
strings as the real server does, and answering with its 400 when one does
not parse, keeps a client from relying on a selector a real cluster would
refuse.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from tests.kube.apiserver.api_status import ApiError


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
