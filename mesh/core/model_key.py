"""The management API's ``ModelInfo.key``: a model's storage fields in one string.

``mmesh.ModelInfo`` has a path and a type but no field for a storage key's
parameters, a schema path or a pinned runtime; ModelMesh Serving carries its
storage fields in ``key`` as JSON, and so does meshserve. A plain string is a
storage key name alone. Both sides of the wire (the Predictor's writer in
:mod:`kube.predictor`, the reader in :mod:`mesh.node.management`) use this
module, so the format is written down once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from mesh.core import errors


@dataclasses.dataclass(frozen=True)
class KeyFields:
    """What ``ModelInfo.key`` carries besides the path."""

    storage_key: str = ""
    storage_params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    schema_path: str = ""
    runtime: str = ""
    """The runtime the model is pinned to (``spec.runtime.name``), if any."""

    def to_json(self) -> str:
        """The fields as one JSON string (empty when there are none)."""
        if not (self.storage_key or self.storage_params or self.schema_path or self.runtime):
            return ""
        fields: dict[str, object] = {
            "storage_key": self.storage_key,
            "storage_params": dict(self.storage_params),
            "schema_path": self.schema_path,
        }
        if self.runtime:
            fields["runtime"] = self.runtime
        return json.dumps(fields, sort_keys=True)


def parse(key: str) -> KeyFields:
    """The fields of ``ModelInfo.key``: a JSON object as written by
    :meth:`KeyFields.to_json`, or a plain storage key name."""
    if not key.strip().startswith("{"):
        return KeyFields(storage_key=key)
    try:
        d = json.loads(key)
    except json.JSONDecodeError as e:
        raise errors.InvalidRequest(f"modelInfo.key is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise errors.InvalidRequest("modelInfo.key must be a JSON object")
    params = d.get("storage_params") or {}
    if not isinstance(params, dict):
        raise errors.InvalidRequest("modelInfo.key: storage_params must be an object")
    return KeyFields(
        storage_key=str(d.get("storage_key") or ""),
        storage_params={str(k): str(v) for k, v in params.items()},
        schema_path=str(d.get("schema_path") or ""),
        runtime=str(d.get("runtime") or ""),
    )
