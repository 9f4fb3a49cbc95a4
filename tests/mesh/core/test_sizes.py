"""Sizes are predicted from disk size, raised by what the type measured."""

from __future__ import annotations

from mesh.core import sizes

MB = 1024 * 1024


def test_predicts_disk_size_times_the_multiplier_for_an_unmeasured_type() -> None:
    model = sizes.SizeModel(multiplier=1.25, minimum=MB)
    assert model.predict("sklearn", 8 * MB) == 10 * MB


def test_a_measured_type_is_predicted_at_least_its_average_size() -> None:
    model = sizes.SizeModel(multiplier=1.25, minimum=MB)
    model = model.learned("sklearn", 50 * MB).learned("sklearn", 30 * MB)
    assert model.types["sklearn"].loads == 2
    assert model.predict("sklearn", 1000) == 40 * MB  # the type's mean
    assert model.predict("sklearn", 80 * MB) == 100 * MB  # a big file: its own guess
    assert model.predict("xgboost", 8 * MB) == 10 * MB  # other types unaffected


def test_a_tiny_model_does_not_make_a_bigger_one_look_huge() -> None:
    model = sizes.SizeModel(multiplier=1.25, minimum=MB).learned("sklearn", 6 * MB)
    assert model.predict("sklearn", 120_000) == 6 * MB
