"""The two kinds of resource that name a model: Predictor and InferenceService.

ModelMesh Serving users write either, often both in one file; the CLI and the
controller read any document through :func:`parse`, which picks the reader by
``kind`` and returns the one :class:`kube.predictor.PredictorSpec` both become,
with its transformer and explainer (:mod:`kube.chain_steps`). Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kube import chain_steps, inference_service, predictor
from mesh.core import errors

KINDS = (predictor.KIND, inference_service.KIND)
OWNERS: Mapping[str, str] = {
    predictor.KIND: predictor.OWNER,
    inference_service.KIND: inference_service.OWNER,
}
"""Each kind's vmodel owner in the mesh."""


def parse(doc: object) -> predictor.PredictorSpec:
    """The spec of a Predictor or InferenceService document."""
    if not isinstance(doc, Mapping):
        return predictor.parse(doc)  # says what is wrong with it
    kind = doc.get("kind")
    if kind == inference_service.KIND:
        return chain_steps.with_chain(doc, inference_service.parse(doc))
    if kind == predictor.KIND or kind is None:
        return chain_steps.with_chain(doc, predictor.parse(doc))
    raise errors.InvalidPredictor(
        "kind", f"must be one of {', '.join(map(repr, KINDS))}, not {kind!r}"
    )


def kind_of_owner(owner: str) -> str:
    """The kind whose resources register vmodels owned by ``owner`` (``""``
    for a vmodel registered some other way)."""
    return next((kind for kind, o in OWNERS.items() if o == owner), "")


@dataclasses.dataclass(frozen=True, order=True)
class ResourceRef:
    """One Predictor or InferenceService: the controller's key for it (a
    Predictor and an InferenceService may share a name, never a ref)."""

    kind: str
    name: str

    @property
    def owner(self) -> str:
        """The vmodel owner this kind registers with."""
        return OWNERS[self.kind]

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


def ref_of(body: Mapping[str, Any]) -> ResourceRef:
    """The ref of a document of either kind (no ``kind``: a Predictor)."""
    kind = body.get("kind") or predictor.KIND
    return ResourceRef(str(kind), str(body["metadata"]["name"]))
