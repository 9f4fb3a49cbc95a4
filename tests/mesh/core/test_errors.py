"""Error messages repeat a client's names, but never a huge one whole."""

from __future__ import annotations

from mesh.core import errors


def test_a_short_name_is_shown_whole() -> None:
    assert errors.ModelNotFound("iris").message == "model 'iris' is not registered"


def test_a_huge_name_is_cut_and_says_how_long_it_was() -> None:
    e = errors.ModelNotFound("x" * 10_000, "vmodel")
    assert len(e.message) < 300
    assert "10000 characters" in e.message and e.message.startswith("vmodel 'xxx")


def test_an_unknown_version_is_worded_as_triton_words_it() -> None:
    e = errors.UnknownVersion("simple", "99")
    assert e.message == "Request for unknown model: 'simple' version 99 is not found"
    assert isinstance(e, errors.ModelNotFound)


def test_an_unknown_model_is_worded_as_triton_words_it() -> None:
    e = errors.UnknownModel("simple")
    assert e.message == "Request for unknown model: 'simple' is not found"
    assert isinstance(e, errors.ModelNotFound)
