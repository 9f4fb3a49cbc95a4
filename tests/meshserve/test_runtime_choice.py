"""The formats a node's runtime serves: the local builds' or the images'."""

from __future__ import annotations

import dataclasses

from mesh.core import settings
from meshserve import runtime_choice


def _types(kind: str, endpoint: str = "") -> set[str]:
    config = settings.Settings(
        runtime=dataclasses.replace(settings.RuntimeSettings(), kind=kind, endpoint=endpoint)
    )
    return set(runtime_choice.make_runtime(config).supported_model_types())


def test_a_node_starting_its_own_runtimes_serves_the_local_builds_formats() -> None:
    assert _types("mlserver") == {
        "sklearn",
        "xgboost",
        "lightgbm",
        "onnx",
        "transformer",
        "explainer",
    }
    assert _types("triton") == {"python"}


def test_a_node_beside_the_deployed_images_serves_theirs() -> None:
    assert _types("mlserver", "127.0.0.1:8001") == {"sklearn", "xgboost", "lightgbm"}
    assert _types("triton", "127.0.0.1:8001") == {
        "python",
        "onnx",
        "pytorch",
        "tensorflow",
        "tensorrt",
    }
