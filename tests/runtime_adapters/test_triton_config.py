"""The Triton adapter's config.pbtxt handling, without a server: a user's
config keeps everything but its name, one is generated where the format
allows, Triton's terse refusals get their reason, sizes follow the rules."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2, service_pb2

from mesh.core import errors
from runtime_adapters import triton

PYTHON = triton.FORMATS["python"]

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
    out = triton.named_config("m1", PYTHON, USER_CONFIG)

    assert out == USER_CONFIG.replace('name: "iris-v3"', 'name: "m1"')
    config = parse(out)
    assert config.name == "m1"
    assert [i.name for i in config.input] == ["INPUT0"]
    assert config.output[0].name == "OUTPUT0"
    assert config.max_batch_size == 8


def test_adds_the_name_when_the_config_has_none() -> None:
    out = triton.named_config("m1", PYTHON, 'backend: "python"\n')
    assert out == 'name: "m1"\nbackend: "python"\n'


def test_adds_the_backend_when_the_config_names_neither_backend_nor_platform() -> None:
    out = triton.named_config("m1", PYTHON, 'name: "x"\nmax_batch_size: 0')
    config = parse(out)
    assert (config.name, config.backend, config.max_batch_size) == ("m1", "python", 0)


def test_keeps_a_users_platform() -> None:
    user = 'platform: "onnxruntime_onnx"\n'
    out = triton.named_config("m1", triton.FORMATS["onnx"], user)
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
    config = parse(triton.named_config("m1", PYTHON, user))
    assert config.name == "m1"


def test_quotes_ids_the_text_format_way() -> None:
    model_id = 'we"ird\\id'
    config = parse(triton.named_config(model_id, PYTHON, 'name: "x"'))
    assert config.name == model_id


def test_reads_message_fields_without_colons_and_angle_brackets() -> None:
    user = 'optimization < input_pinned_memory { enable: true } >\nname: "x"\n'
    fields = triton.top_level_fields(user)
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
        triton.top_level_fields(user)


def test_a_malformed_user_config_fails_the_load_naming_the_file() -> None:
    with pytest.raises(errors.ModelLoadFailed, match=r"config.pbtxt is malformed: .*never closed"):
        triton.plan_layout("m1", PYTHON, ["model.py"], "input [")


# -- generated configs --------------------------------------------------------------


def test_generates_a_python_config_with_one_cpu_instance() -> None:
    config = parse(triton.generated_config("m1", PYTHON))
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
    config = parse(triton.generated_config("m1", triton.FORMATS[model_type]))
    assert (config.name, config.platform) == ("m1", platform)


def test_a_pytorch_model_without_a_config_fails_saying_one_is_needed() -> None:
    with pytest.raises(errors.ModelLoadFailed, match=r"needs a config\.pbtxt listing its inputs"):
        triton.generated_config("m1", triton.FORMATS["pytorch"])


# -- Triton's refusals ----------------------------------------------------------------


def test_config_problem_names_the_line_and_the_unknown_field() -> None:
    problem = triton.config_problem('backend: "python"\nno_such_field: 1\n')
    assert problem is not None
    assert "2:1" in problem
    assert "no_such_field" in problem


def test_config_problem_is_none_for_a_valid_config() -> None:
    assert triton.config_problem(USER_CONFIG) is None


def test_reads_the_reason_for_a_model_from_tritons_error_lines() -> None:
    lines = [
        'I1125 10:05:10.156259 2065 model_lifecycle.cc:472] "loading: m1:1"',
        "E1125 10:05:11.723498 2065 model_repository_manager.cc:1460] "
        "\"Poll failed for model directory 'm1': unexpected directory name\"",
        "E1125 10:05:11.723498 2065 model_repository_manager.cc:1460] "
        "\"Poll failed for model directory 'm10': something else\"",
    ]
    assert triton.triton_log_errors("m1", lines) == [
        "Poll failed for model directory 'm1': unexpected directory name"
    ]


# -- sizes ----------------------------------------------------------------------------


def statistics(*usages: tuple[str, int]) -> service_pb2.ModelStatisticsResponse:
    response = service_pb2.ModelStatisticsResponse()
    model = response.model_stats.add(name="m1", version="1")
    for kind, size in usages:
        model.memory_usage.add(type=kind, id=0, byte_size=size)
    return response


def test_tritons_own_report_is_read_for_the_counted_pool() -> None:
    report = statistics(("CPU", 100), ("CPU_PINNED", 20), ("GPU", 5000))
    assert triton.reported_bytes(report, gpu=False) == 120
    assert triton.reported_bytes(report, gpu=True) == 5000


def test_no_report_is_none_not_zero() -> None:
    assert triton.reported_bytes(statistics(), gpu=False) is None


def test_size_is_corrected_upward_by_the_larger_observation() -> None:
    assert triton.model_size(10, 50, None, None, 1) == 50
    assert triton.model_size(10, 50, 70, None, 1) == 70
    assert triton.model_size(100, 50, None, None, 1) == 100  # never below the prediction
    assert triton.model_size(10, None, None, None, 64) == 64


def test_a_reload_keeps_the_size_an_earlier_load_measured() -> None:
    assert triton.model_size(10, 0, None, 45_000_000, 1) == 45_000_000


def test_a_reload_of_a_loaded_model_reports_its_size_whatever_memory_did_meanwhile() -> None:
    assert triton.model_size(10, 45_100_000, None, 45_000_000, 1) == 45_000_000
