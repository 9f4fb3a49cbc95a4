"""One reader for every variable: unset or empty keeps the default, a bad value
is named with the same words wherever it is read."""

from __future__ import annotations

import pytest

from mesh.core import errors
from mesh.core.env_reader import EnvReader, parse_endpoint, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 2**20),
        ("512Mi", 512 * 2**20),
        ("2G", 2 * 10**9),
        ("1.5Gi", 3 * 2**29),
        ("10KiB", 10240),
    ],
)
def test_parses_sizes_with_suffixes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_size_that_is_not_one_names_the_flag_or_variable() -> None:
    with pytest.raises(errors.ConfigError, match=r"--capacity: 'lots' is not a size"):
        parse_size("lots", "--capacity")


@pytest.mark.parametrize("text", ["localhost", ":80", "host:", "host:0", "host:65536", "h:x"])
def test_an_endpoint_needs_a_host_and_a_port_from_1_to_65535(text: str) -> None:
    with pytest.raises(errors.ConfigError, match=f"ADDR: '{text}' is not host:port"):
        parse_endpoint(text, "ADDR")


def test_an_endpoint_splits_at_its_last_colon() -> None:
    assert parse_endpoint(" [::1]:8033 ", "ADDR") == ("[::1]", 8033)


def test_unset_and_empty_keep_the_default() -> None:
    read = EnvReader({"EMPTY": ""})
    assert read.text("UNSET") is None and read.text("EMPTY") is None
    assert read.integer("EMPTY", 3) == 3
    assert read.number("UNSET", 0.5) == 0.5
    assert read.size("EMPTY", 7) == 7
    assert read.port("UNSET", 8033) == 8033
    assert read.items("UNSET") == ()
    assert not read.flag("UNSET")


def test_values_keep_their_spaces_unless_asked_to_strip() -> None:
    env = {"NAME": " n1 ", "BLANK": "   "}
    assert EnvReader(env).text("NAME") == " n1 "
    assert EnvReader(env).text("BLANK") == "   "
    assert EnvReader(env, strip=True).text("NAME") == "n1"
    assert EnvReader(env, strip=True).text("BLANK") is None


def test_typed_values_are_read() -> None:
    read = EnvReader(
        {"N": "42", "X": "0.25", "S": "2Mi", "P": "0", "OFF": "-1", "F": "YES", "L": "a, ,b,"}
    )
    assert read.integer("N", 0) == 42
    assert read.number("X", 0.0) == 0.25
    assert read.size("S", 0) == 2 * 2**20
    assert read.port("P", 1) == 0
    assert read.optional_port("OFF", 1) == -1
    assert read.flag("F")
    assert read.items("L") == ("a", "b")


@pytest.mark.parametrize(
    ("method", "value", "complaint"),
    [
        ("integer", "4.5", "V: '4.5' is not an integer"),
        ("number", "soon", "V: 'soon' is not a number"),
        ("size", "big", "V: 'big' is not a size"),
        ("port", "-1", "V: -1 is not a port$"),
        ("port", "65536", "V: 65536 is not a port$"),
        ("optional_port", "-2", r"V: -2 is not a port \(0: any free port, -1: off\)"),
    ],
)
def test_a_bad_value_is_named(method: str, value: str, complaint: str) -> None:
    read = EnvReader({"V": value})
    with pytest.raises(errors.ConfigError, match=complaint):
        getattr(read, method)("V", 0)
