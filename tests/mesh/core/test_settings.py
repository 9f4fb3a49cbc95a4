"""Settings come from ModelMesh's variable names; bad values name the variable."""

from __future__ import annotations

import pathlib

import pytest

from mesh.core import errors, settings


def test_defaults_without_environment() -> None:
    s = settings.from_env({})
    assert s.service.grpc_port == 8033
    assert s.kv.prefix == "mm"
    assert s.kv.endpoints == ("127.0.0.1:2379",)
    assert (s.cache.eviction, s.cache.popularity_half_life_seconds) == ("popularity", 600.0)


def test_modelmesh_lru_eviction_can_be_chosen() -> None:
    s = settings.from_env({"MESHSERVE_EVICTION": "LRU", "MESHSERVE_POPULARITY_HALF_LIFE": "60"})
    assert (s.cache.eviction, s.cache.popularity_half_life_seconds) == ("lru", 60.0)


def test_reads_modelmesh_variable_names() -> None:
    s = settings.from_env(
        {
            "KV_STORE": "etcd:10.0.0.1:2379,http://10.0.0.2:2379",
            "MM_KVSTORE_PREFIX": "/prod/",
            "MM_SVC_GRPC_PORT": "9033",
            "MM_SVC_GRPC_MAX_MSG_SIZE": "64Mi",
            "MM_LABELS": "mt:sklearn, rt:mlserver",
            "MESHSERVE_CAPACITY": "2Gi",
            "MESHSERVE_DATA_DIR": "/var/lib/meshserve",
        }
    )
    assert s.kv.endpoints == ("10.0.0.1:2379", "10.0.0.2:2379")
    assert s.kv.prefix == "prod"
    assert s.service.grpc_port == 9033
    assert s.service.max_message_bytes == 64 * 2**20
    assert s.node.labels == ("mt:sklearn", "rt:mlserver")
    assert s.cache.capacity_bytes == 2 * 2**30
    assert s.node.model_dir == pathlib.Path("/var/lib/meshserve/models")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KV_STORE": "zookeeper:1.2.3.4:2181"}, "KV_STORE"),
        ({"KV_STORE": "etcd:nohostport"}, "KV_STORE"),
        ({"MM_SVC_GRPC_PORT": "eighty"}, "MM_SVC_GRPC_PORT"),
        ({"MM_SVC_GRPC_PORT": "70000"}, "MM_SVC_GRPC_PORT"),
        ({"MESHSERVE_CAPACITY": "lots"}, "MESHSERVE_CAPACITY"),
        ({"MESHSERVE_CAPACITY": "-5"}, "MESHSERVE_CAPACITY"),
        ({"MESHSERVE_CAPACITY_BUFFER": "1.5"}, "MESHSERVE_CAPACITY_BUFFER"),
        ({"MESHSERVE_RUNTIME_ENDPOINT": "localhost"}, "MESHSERVE_RUNTIME_ENDPOINT"),
        ({"MESHSERVE_EVICTION": "random"}, "MESHSERVE_EVICTION"),
        ({"MESHSERVE_POPULARITY_HALF_LIFE": "0"}, "MESHSERVE_POPULARITY_HALF_LIFE"),
    ],
)
def test_malformed_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(errors.ConfigError, match=named):
        settings.from_env(env)


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
    assert settings.parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "port"),
    [(None, 8008), ("9008", 9008), ("0", 0), ("-1", -1)],
)
def test_rest_port_defaults_to_8008_0_picks_one_and_minus_1_turns_rest_off(
    value: str | None, port: int
) -> None:
    env = {} if value is None else {"REST_PROXY_LISTEN_PORT": value}
    assert settings.from_env(env).service.rest_port == port


@pytest.mark.parametrize("value", ["-2", "65536", "http"])
def test_bad_rest_port_names_the_variable(value: str) -> None:
    with pytest.raises(errors.ConfigError, match="REST_PROXY_LISTEN_PORT"):
        settings.from_env({"REST_PROXY_LISTEN_PORT": value})


def test_storage_config_folder_comes_from_meshserve_storage_config() -> None:
    assert settings.from_env({}).node.storage_config_dir is None
    s = settings.from_env({"MESHSERVE_STORAGE_CONFIG": "/etc/storage-config"})
    assert s.node.storage_config_dir == pathlib.Path("/etc/storage-config")
