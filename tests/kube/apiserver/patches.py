"""The three patch formats clients send: merge, JSON and strategic merge.

kopf writes its finalizers and annotations with JSON merge patches (RFC
7386) and guards some with JSON patch ``test`` operations (RFC 6902), and the
controller writes ``/status`` with a merge patch; a patch applied differently
from the real server would hide a lost update. A strategic merge patch is
applied as a merge patch (lists replaced, not merged by key), which the
module that routes patches accepts for built-in kinds only, as the real
server does.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any


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
