"""Sizes are predicted with the multiplier until the type has been measured."""

from __future__ import annotations

from mesh import sizes

MB = 1024 * 1024


def test_predicts_with_the_multiplier_for_an_unmeasured_type() -> None:
    model = sizes.SizeModel(multiplier=1.25, minimum=MB)
    assert model.predict("sklearn", 8 * MB) == 10 * MB


def test_learns_the_running_average_ratio_of_a_type() -> None:
    model = sizes.SizeModel(multiplier=1.25, minimum=MB)
    model = model.learned("sklearn", 10 * MB, 50 * MB)  # ratio 5
    model = model.learned("sklearn", 10 * MB, 30 * MB)  # ratio 3
    assert model.types["sklearn"].loads == 2
    assert model.predict("sklearn", 2 * MB) == 8 * MB  # mean ratio 4
    assert model.predict("xgboost", 8 * MB) == 10 * MB  # other types unaffected


def test_never_predicts_below_the_minimum_and_ignores_empty_files() -> None:
    model = sizes.SizeModel(multiplier=1.25, minimum=MB).learned("onnx", 0, 5 * MB)
    assert "onnx" not in model.types or model.types["onnx"].loads == 0
    assert model.predict("onnx", 10) == MB
