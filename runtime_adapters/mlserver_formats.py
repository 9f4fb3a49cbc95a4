"""Which model types MLServer serves, with which class, from which file.

A Predictor names a model type (``sklearn``, ``lightgbm``...); MLServer
names an implementation class in each model's ``model-settings.json`` and a
model file in its ``parameters.uri``. One :class:`MLServerFormat` row per
type says both. Most classes come with MLServer's own runtime packages
(``mlserver-sklearn``...), in ``seldonio/mlserver`` as in the MLServer venv
``make install`` builds. MLServer has no ONNX runtime, and the Triton that
``make install`` builds has no ONNX backend, so ONNX is served by a class
that ships with meshserve (:mod:`runtime_adapters.mlserver_runtimes`): only
an MLServer the node starts itself, from that venv, can import it.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterable, Mapping, Sequence

from mesh.core import errors
from runtime_adapters import v2_runtime

MODEL_SETTINGS_FILE = "model-settings.json"
"""The file MLServer reads in each model folder."""

BUNDLED_RUNTIMES_DIR = pathlib.Path(__file__).resolve().parent / "mlserver_runtimes"
"""The folder of meshserve's own MLServer runtime modules: put on the
``PYTHONPATH`` of an MLServer the node starts, so its implementation classes
import there as top-level modules (``meshserve_onnx.OnnxRuntimeModel``)."""


@dataclasses.dataclass(frozen=True)
class MLServerFormat:
    """How MLServer serves one model type: a row of :data:`FORMATS`."""

    model_type: str
    """The mesh's name for the type (a Predictor's ``modelType``)."""
    implementation: str
    """The MLServer class (``model-settings.json``'s ``implementation``)."""
    suffixes: tuple[str, ...]
    """File name endings that mark the model's file."""
    well_known: tuple[str, ...] = ()
    """Names the type's MLServer runtime looks for first; they break a tie
    when a folder holds several candidates."""
    bundled: bool = False
    """Whether the class ships with meshserve (in :data:`BUNDLED_RUNTIMES_DIR`)
    rather than with MLServer: then only an MLServer the node starts can
    load it."""
    faster: str = ""
    """A class of meshserve's serving the same files faster, used by an
    MLServer that carries meshserve's classes (one the node starts)."""


FORMATS: Mapping[str, MLServerFormat] = {
    f.model_type: f
    for f in (
        MLServerFormat(
            "sklearn",
            "mlserver_sklearn.SKLearnModel",
            (".joblib", ".pkl", ".pickle"),
            ("model.joblib", "model.pickle", "model.pkl"),
            faster="meshserve_sklearn.SKLearnModel",
        ),
        MLServerFormat(
            "xgboost",
            "mlserver_xgboost.XGBoostModel",
            (".json", ".ubj", ".bst", ".model"),
            ("model.bst", "model.json", "model.ubj"),
        ),
        # A booster saved with Booster.save_model (text): ModelMesh Serving's
        # examples call it model.bst, LightGBM's own docs model.txt.
        MLServerFormat(
            "lightgbm",
            "mlserver_lightgbm.LightGBMModel",
            (".bst", ".txt", ".model"),
            ("model.bst",),
        ),
        MLServerFormat(
            "onnx",
            "meshserve_onnx.OnnxRuntimeModel",
            (".onnx",),
            ("model.onnx",),
            bundled=True,
        ),
        # A vmodel's chain (router/chains.py): the user's transformer class,
        # and a SHAP explainer over its background data.
        MLServerFormat(
            "transformer",
            "meshserve_transformer.TransformerModel",
            (".py",),
            ("transformer.py", "model.py"),
            bundled=True,
        ),
        MLServerFormat(
            "explainer",
            "meshserve_explainer.KernelShapExplainer",
            (".npy", ".csv"),
            ("background.npy", "background.csv"),
            bundled=True,
        ),
    )
}
"""Model type → how MLServer serves it."""

IMAGE_MODEL_TYPES: tuple[str, ...] = tuple(t for t, f in FORMATS.items() if not f.bundled)
"""The types any MLServer 1.7 with its runtime packages serves (the
``seldonio/mlserver`` image beside a node on Kubernetes)."""

ALL_MODEL_TYPES: tuple[str, ...] = tuple(FORMATS)
"""The types an MLServer the node starts from ``make install``'s venv serves."""


def implementation_for(fmt: MLServerFormat, served: Sequence[str]) -> str:
    """The class an MLServer serving the types ``served`` runs ``fmt`` with:
    meshserve's faster one where that MLServer carries meshserve's classes
    (it serves every bundled type), else MLServer's own."""
    carries_ours = all(t in served for t, f in FORMATS.items() if f.bundled)
    return fmt.faster if fmt.faster and carries_ours else fmt.implementation


def format_for(model_id: str, model_type: str, served: Sequence[str]) -> MLServerFormat:
    """The :class:`MLServerFormat` of ``model_type`` if this MLServer serves
    it (``served``); raises :class:`mesh.core.errors.ModelLoadFailed` naming
    the types it does serve."""
    fmt = FORMATS.get(model_type)
    if fmt is not None and model_type in served:
        return fmt
    supported = ", ".join(served) or "none"
    if fmt is not None:
        raise errors.ModelLoadFailed(
            model_id,
            f"model type {model_type!r} is served only by an MLServer the node starts itself "
            f"(meshserve's {fmt.implementation}); this mlserver runtime is reached at an "
            f"endpoint (supported: {supported})",
        )
    raise errors.ModelLoadFailed(
        model_id,
        f"model type {model_type!r} is not supported by the mlserver runtime "
        f"(supported: {supported})",
    )


def is_runtime_file(relative: str) -> bool:
    """Whether a path in a model folder is the runtime's or a marker, not the
    model: ``model-settings.json`` at the top, and hidden files or folders."""
    return v2_runtime.is_runtime_file(relative, MODEL_SETTINGS_FILE)


def _latest_version(candidates: Sequence[str]) -> list[str]:
    """The candidates in the highest numbered top folder, when every one
    lies in such a folder (a Triton repository's ``1/model.onnx``,
    ``2/model.onnx``: Triton serves the latest); else all of them."""
    tops = [c.split("/", 1)[0] if "/" in c else "" for c in candidates]
    if not tops or not all(t.isdigit() for t in tops):
        return list(candidates)
    latest = max(int(t) for t in tops)
    return [c for c, t in zip(candidates, tops, strict=True) if int(t) == latest]


def choose_model_file(model_id: str, model_type: str, files: Iterable[str]) -> str:
    """The model file among ``files`` (paths relative to the model folder,
    ``/``-separated).

    The one file whose ending marks the type (in version folders, the
    latest version's); among several, the single one with a name MLServer
    knows (``model.joblib``...) at the top of the folder; with none, a folder of exactly one file,
    whatever its name. Raises :class:`mesh.core.errors.ModelLoadFailed`
    otherwise, listing what was there.
    """
    model_files = sorted(f for f in files if not is_runtime_file(f))
    fmt = FORMATS.get(model_type)
    suffixes = fmt.suffixes if fmt else ()
    candidates = _latest_version([f for f in model_files if f.lower().endswith(suffixes)])
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        known = [f for f in candidates if fmt and f in fmt.well_known]
        if len(known) == 1:
            return known[0]
        raise errors.ModelLoadFailed(
            model_id,
            f"several {model_type} model files in the folder "
            f"({v2_runtime.some_names(candidates)}); keep one, or name it in "
            f"{MODEL_SETTINGS_FILE} as parameters.uri",
        )
    if len(model_files) == 1:
        return model_files[0]
    wanted = ", ".join(f"*{s}" for s in suffixes) or "a single file"
    found = v2_runtime.some_names(model_files) if model_files else "the folder is empty"
    raise errors.ModelLoadFailed(
        model_id, f"no {model_type} model file ({wanted}) in the folder: {found}"
    )
