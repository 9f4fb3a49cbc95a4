"""Which model types Triton serves, and with which backend: the format table.

A Predictor names a model type (``python``, ``onnx``...); Triton names a
backend or platform in each model's ``config.pbtxt`` and expects the model
file under a default name in a version folder. The wheel's Triton
(``nvidia-pytriton``, what ``make runtimes`` installs) has the Python backend
only, so locally the adapter serves ``python`` models (a Triton
Python-backend ``model.py``); ``onnx`` (onnxruntime backend), ``pytorch``
(libtorch), ``tensorflow`` (SavedModel) and ``tensorrt`` need NVIDIA's image,
and :attr:`runtime_adapters.triton.adapter.TritonConfig.model_types` says
which a given Triton serves. One :class:`TritonFormat` row per type says all
the rest of the package needs to know about it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from mesh.core import errors

_MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class TritonFormat:
    """How Triton serves one model type: a row of :data:`FORMATS`."""

    model_type: str
    """The mesh's name for the type (a Predictor's ``modelFormat``)."""
    backend: str = ""
    """``backend:`` in config.pbtxt (empty where ``platform`` says it)."""
    platform: str = ""
    """``platform:`` in config.pbtxt (empty where ``backend`` says it)."""
    default_file: str = ""
    """Triton's default model file (or folder) name in a version folder."""
    suffixes: tuple[str, ...] = ()
    """Name endings that mark the model's file (or folder)."""
    folder_marker: str = ""
    """A file that marks a folder model at the top of the folder
    (``saved_model.pb``): the whole folder becomes ``1/<default_file>/``."""
    config_generated: bool = True
    """Whether a config.pbtxt naming only the backend is enough: Triton (or
    the model itself) completes the inputs and outputs. A TorchScript file
    does not say them, so a ``pytorch`` model must come with a config."""
    generated_extra: str = ""
    """Lines added to a generated config.pbtxt."""
    instance_overhead_bytes: int = 0
    """Host memory one instance costs beyond its files (predicted before the
    first measurement)."""
    in_wheel: bool = False
    """Whether the ``nvidia-pytriton`` build of Triton has this backend."""


FORMATS: Mapping[str, TritonFormat] = {
    f.model_type: f
    for f in (
        TritonFormat(
            "python",
            backend="python",
            default_file="model.py",
            suffixes=(".py",),
            # One CPU instance: one stub process, whatever GPUs the machine has.
            generated_extra="instance_group [ { kind: KIND_CPU, count: 1 } ]\n",
            # An idle Python-backend stub process: ~42 MB RSS (35 MB its own).
            instance_overhead_bytes=40 * _MIB,
            in_wheel=True,
        ),
        TritonFormat("onnx", backend="onnxruntime", default_file="model.onnx", suffixes=(".onnx",)),
        TritonFormat(
            "pytorch",
            backend="pytorch",
            default_file="model.pt",
            suffixes=(".pt", ".pth", ".torchscript"),
            config_generated=False,
        ),
        TritonFormat(
            "tensorflow",
            platform="tensorflow_savedmodel",
            default_file="model.savedmodel",
            suffixes=(".savedmodel",),
            folder_marker="saved_model.pb",
        ),
        TritonFormat(
            "tensorrt",
            platform="tensorrt_plan",
            default_file="model.plan",
            suffixes=(".plan", ".engine"),
        ),
    )
}
"""Model type → how Triton serves it. Only ``python`` runs on the wheel's
Triton; the others need NVIDIA's image (list them in
:attr:`runtime_adapters.triton.adapter.TritonConfig.model_types`)."""

WHEEL_MODEL_TYPES: tuple[str, ...] = tuple(t for t, f in FORMATS.items() if f.in_wheel)
"""The types the ``nvidia-pytriton`` Triton can load: ``("python",)``."""


def format_for(model_id: str, model_type: str, served: Sequence[str]) -> TritonFormat:
    """The :class:`TritonFormat` of ``model_type`` if this Triton serves it
    (``served``); raises :class:`mesh.core.errors.ModelLoadFailed` naming the
    types it does serve, and the backend a known type would need."""
    fmt = FORMATS.get(model_type)
    supported = ", ".join(served) or "none"
    if fmt is not None and model_type in served:
        return fmt
    if fmt is not None:
        needs = fmt.backend or fmt.platform
        raise errors.ModelLoadFailed(
            model_id,
            f"model type {model_type!r} needs Triton's {needs} backend, which this triton "
            f"runtime does not have (supported: {supported})",
        )
    raise errors.ModelLoadFailed(
        model_id,
        f"model type {model_type!r} is not supported by the triton runtime "
        f"(supported: {supported})",
    )
