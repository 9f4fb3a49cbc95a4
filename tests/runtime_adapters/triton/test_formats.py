"""The format table, without a server: the wheel's Triton serves Python
models only, every format names its backend and file, and a type a Triton
cannot serve names the backend it would need and the types it does serve."""

from __future__ import annotations

import pathlib

import pytest

from mesh.core import errors
from runtime_adapters.triton import adapter as triton_adapter
from runtime_adapters.triton import formats


def test_the_wheels_triton_serves_python_models_only() -> None:
    assert formats.WHEEL_MODEL_TYPES == ("python",)
    assert triton_adapter.TritonConfig(model_dir=pathlib.Path("m")).model_types == ("python",)


def test_every_format_names_its_backend_or_platform_and_its_file() -> None:
    for model_type, fmt in formats.FORMATS.items():
        assert fmt.model_type == model_type
        assert bool(fmt.backend) != bool(fmt.platform)
        assert fmt.default_file
        assert fmt.suffixes


def test_a_type_this_triton_lacks_a_backend_for_names_the_backend_and_the_served_types() -> None:
    with pytest.raises(errors.ModelLoadFailed) as caught:
        formats.format_for("m1", "onnx", ("python",))
    assert "onnxruntime backend" in caught.value.reason
    assert "supported: python" in caught.value.reason


def test_an_unknown_type_names_the_served_types() -> None:
    with pytest.raises(errors.ModelLoadFailed, match=r"'sklearn' is not supported.*python, onnx"):
        formats.format_for("m1", "sklearn", ("python", "onnx"))


def test_a_triton_with_more_backends_serves_more_types() -> None:
    assert formats.format_for("m1", "onnx", ("python", "onnx")).backend == "onnxruntime"
