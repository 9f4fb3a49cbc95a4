"""config.pbtxt as text, without a server: a user's config keeps everything
but its name however it is written, malformed text is refused saying where,
one is generated where the format allows, and a config Triton refused is
checked against the schema to say what is wrong."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from mesh.core import errors
from runtime_adapters.triton import formats, pbtxt

PYTHON = formats.FORMATS["python"]

USER_CONFIG = """\
# my model, name: "not-this-one"
name: "iris-v3"
backend: "python"
max_batch_size: 8
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] }
]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]
parameters { key: "name" value: { string_value: "name: \\"x\\"" } }
"""


def parse(text: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(text, config)
    return config


# -- the user's config ------------------------------------------------------------


def test_replaces_only_the_top_level_name_and_keeps_the_rest_byte_for_byte() -> None:
    out = pbtxt.named_config("m1", PYTHON, USER_CONFIG)

    assert out == USER_CONFIG.replace('name: "iris-v3"', 'name: "m1"')
    config = parse(out)
    assert config.name == "m1"
    assert [i.name for i in config.input] == ["INPUT0"]
    assert config.output[0].name == "OUTPUT0"
    assert config.max_batch_size == 8


def test_adds_the_name_when_the_config_has_none() -> None:
    out = pbtxt.named_config("m1", PYTHON, 'backend: "python"\n')
    assert out == 'name: "m1"\nbackend: "python"\n'


def test_adds_the_backend_when_the_config_names_neither_backend_nor_platform() -> None:
    out = pbtxt.named_config("m1", PYTHON, 'name: "x"\nmax_batch_size: 0')
    config = parse(out)
    assert (config.name, config.backend, config.max_batch_size) == ("m1", "python", 0)


def test_keeps_a_users_platform() -> None:
    user = 'platform: "onnxruntime_onnx"\n'
    out = pbtxt.named_config("m1", formats.FORMATS["onnx"], user)
    config = parse(out)
    assert (config.platform, config.backend) == ("onnxruntime_onnx", "")


@pytest.mark.parametrize(
    "user",
    [
        "name: 'single quoted'",
        'name:"no-space"',
        'name : "spaced" ; backend: "python"',
        'name: "adjacent" "strings"',
        'name: "escaped \\" quote"',
        '  # comment\n  name: "indented"  # trailing comment\n',
    ],
)
def test_replaces_the_name_however_it_is_written(user: str) -> None:
    config = parse(pbtxt.named_config("m1", PYTHON, user))
    assert config.name == "m1"


def test_quotes_ids_the_text_format_way() -> None:
    model_id = 'we"ird\\id'
    config = parse(pbtxt.named_config(model_id, PYTHON, 'name: "x"'))
    assert config.name == model_id


def test_reads_message_fields_without_colons_and_angle_brackets() -> None:
    user = 'optimization < input_pinned_memory { enable: true } >\nname: "x"\n'
    fields = pbtxt.top_level_fields(user)
    assert [f.name for f in fields] == ["optimization", "name"]
    assert fields[1].value == "x"


@pytest.mark.parametrize(
    ("user", "where"),
    [
        ('name: "x"\ninput [ { name: "a" }\n', "never closed"),
        ('name: "x" }', "line 1"),
        ('input [ { name: "a" ] }', "unexpected ']'"),
        ("name:", "has no value"),
        ('name: "x"\n= 3', "line 2"),
    ],
)
def test_refuses_malformed_text_saying_where(user: str, where: str) -> None:
    with pytest.raises(ValueError, match=where):
        pbtxt.top_level_fields(user)


# -- generated configs --------------------------------------------------------------


def test_generates_a_python_config_with_one_cpu_instance() -> None:
    config = parse(pbtxt.generated_config("m1", PYTHON))
    assert (config.name, config.backend) == ("m1", "python")
    assert len(config.instance_group) == 1
    assert config.instance_group[0].count == 1
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


@pytest.mark.parametrize(
    ("model_type", "platform"),
    [("tensorflow", "tensorflow_savedmodel"), ("tensorrt", "tensorrt_plan")],
)
def test_generates_a_platform_config_where_triton_reads_the_tensors_from_the_model(
    model_type: str, platform: str
) -> None:
    config = parse(pbtxt.generated_config("m1", formats.FORMATS[model_type]))
    assert (config.name, config.platform) == ("m1", platform)


def test_a_pytorch_model_without_a_config_fails_saying_one_is_needed() -> None:
    with pytest.raises(errors.ModelLoadFailed, match=r"needs a config\.pbtxt listing its inputs"):
        pbtxt.generated_config("m1", formats.FORMATS["pytorch"])


# -- Triton's refusals ----------------------------------------------------------------


def test_config_problem_names_the_line_and_the_unknown_field() -> None:
    problem = pbtxt.config_problem('backend: "python"\nno_such_field: 1\n')
    assert problem is not None
    assert "2:1" in problem
    assert "no_such_field" in problem


def test_config_problem_is_none_for_a_valid_config() -> None:
    assert pbtxt.config_problem(USER_CONFIG) is None
