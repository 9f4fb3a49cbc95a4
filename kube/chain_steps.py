"""A resource's transformer and explainer, read as models of the mesh.

KServe runs a transformer (``spec.transformer``) and an explainer
(``spec.explainer``) as containers of their own. The mesh runs them as
models beside the predictor (:mod:`router.chains`): a transformer is a folder
holding the user's Python class, an explainer a folder holding SHAP's
background data, each loaded by MLServer on demand like any model. So this
reads, from either kind of resource:

- an InferenceService's ``spec.transformer.model`` / ``spec.explainer.model``,
  shaped as ``spec.predictor.model`` (``storageUri`` or ``storage``;
  ``modelFormat.name``, if given, must be ``transformer`` / ``explainer``);
- on any resource, the annotations ``meshserve.io/transformer-uri`` and
  ``meshserve.io/explainer-uri``: a storage URI, or a path in the
  predictor's own storage (they survive a CRD that prunes unknown fields).

KServe's own forms (``containers``, an image; ``alibi``, ``art``) are refused
naming the field and saying the mesh runs these as models. Each step becomes
a :class:`kube.predictor.PredictorSpec` named ``<name>-transformer`` /
``<name>-explainer``, whose model id hashes its files like the predictor's.
Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kube import inference_service, predictor
from mesh.core import errors

STEPS = ("transformer", "explainer")
"""The chain's components; each is also its model type in the mesh."""
URI_ANNOTATIONS: Mapping[str, str] = {s: f"meshserve.io/{s}-uri" for s in STEPS}
_KSERVE_FORMS: Mapping[str, tuple[str, ...]] = {
    "transformer": ("containers",),
    "explainer": ("containers", "alibi", "art"),
}
_ARTICLE = {"transformer": "a", "explainer": "an"}
_HOW = {
    "transformer": "a folder holding your Python class with preprocess/postprocess",
    "explainer": "a folder holding SHAP's background data (background.npy)",
}


def with_chain(doc: Mapping[str, Any], spec: predictor.PredictorSpec) -> predictor.PredictorSpec:
    """``spec`` (parsed from ``doc``) with its transformer and explainer."""
    kind = str(doc.get("kind") or predictor.KIND)
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    body = doc.get("spec") if kind == inference_service.KIND else None
    section = body if isinstance(body, Mapping) else {}
    transformer = _step("transformer", spec, annotations, section, kind)
    explainer = _step("explainer", spec, annotations, section, kind)
    if transformer is None and explainer is None:
        return spec
    return dataclasses.replace(spec, transformer=transformer, explainer=explainer)


def _step(
    step: str,
    spec: predictor.PredictorSpec,
    annotations: Mapping[str, Any],
    body: Mapping[str, Any],
    kind: str,
) -> predictor.PredictorSpec | None:
    annotation = URI_ANNOTATIONS[step]
    uri = predictor.string_field(
        annotations.get(annotation), f"metadata.annotations.{annotation}", kind=kind
    )
    given = body.get(step)
    if given is not None and uri:
        raise errors.InvalidPredictor(
            f"spec.{step}", f"cannot be given with the {annotation} annotation", kind
        )
    if given is not None:
        return _from_spec(step, spec, annotations, given, kind)
    if not uri:
        return None
    if "://" in uri:
        path, params = inference_service.storage_uri_fields(
            uri, f"metadata.annotations.{annotation}"
        )
    else:  # a path in the predictor's own storage
        path, params = uri, dict(spec.storage_params)
    return predictor.PredictorSpec(
        name=f"{spec.name}-{step}",
        model_type=step,
        path=path,
        storage_key=spec.storage_key,
        storage_params=params,
        owner=spec.owner,
    )


def _from_spec(
    step: str,
    spec: predictor.PredictorSpec,
    annotations: Mapping[str, Any],
    given: object,
    kind: str,
) -> predictor.PredictorSpec:
    field = f"spec.{step}"
    section = predictor.mapping_field(given, field, kind=kind)
    for form in _KSERVE_FORMS[step]:
        if section.get(form) is not None:
            raise errors.InvalidPredictor(
                f"{field}.{form}",
                f"the mesh runs {_ARTICLE[step]} {step} as a model, not a container: "
                f"give {field}.model with the storageUri of {_HOW[step]}",
                kind,
            )
    model = predictor.mapping_field(section.get("model"), f"{field}.model", True, kind)
    fmt = predictor.mapping_field(model.get("modelFormat"), f"{field}.model.modelFormat", kind=kind)
    name = predictor.string_field(fmt.get("name"), f"{field}.model.modelFormat.name", kind=kind)
    if name and name != step:
        raise errors.InvalidPredictor(
            f"{field}.model.modelFormat.name", f"must be {step!r} (or left out), not {name!r}", kind
        )
    path, key, params, _ = inference_service.storage_fields(model, annotations, f"{field}.model")
    return predictor.PredictorSpec(
        name=f"{spec.name}-{step}",
        model_type=step,
        path=path,
        storage_key=key or spec.storage_key,
        storage_params=params,
        owner=spec.owner,
    )
