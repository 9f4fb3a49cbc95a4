"""The formats each deployed runtime lists are the ones its adapter serves
beside that image: a node labels itself ``mt:<format>`` from the list, so a
format listed but not served fails every load, one served but not listed
is never placed."""

from __future__ import annotations

from runtime_adapters import mlserver_formats
from runtime_adapters.triton import formats as triton_formats
from tests.deploy import manifests


def _listed(file: str) -> set[str]:
    runtime = manifests.load((manifests.DEPLOY / "runtimes" / file).read_text())
    return {f["name"] for f in runtime["spec"]["supportedModelFormats"]}


def test_mlserver_lists_what_seldons_image_serves_so_no_onnx() -> None:
    assert _listed("mlserver.yaml") == set(mlserver_formats.IMAGE_MODEL_TYPES)
    assert "onnx" not in _listed("mlserver.yaml")


def test_triton_lists_every_backend_of_nvidias_image() -> None:
    assert _listed("triton.yaml") == set(triton_formats.FORMATS)
