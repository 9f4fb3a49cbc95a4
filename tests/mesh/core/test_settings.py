"""Settings come from ModelMesh's variable names, one concern at a time; bad values
name the variable."""

from __future__ import annotations

import pathlib

import pytest

from mesh.core import errors, settings


def test_defaults_without_environment() -> None:
    s = settings.from_env({})
    assert s.service.grpc_port == 8033
    assert s.kv.prefix == "mm"
    assert s.kv.endpoints == ("127.0.0.1:2379",)
    assert (s.cache.eviction, s.cache.popularity_half_life_seconds) == ("popularity", 120.0)


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
        ({"MM_SVC_GRPC_MAX_MSG_SIZE": "0"}, "MM_SVC_GRPC_MAX_MSG_SIZE"),
        ({"MESHSERVE_LEASE_TTL": "ten"}, "MESHSERVE_LEASE_TTL"),
        ({"MESHSERVE_METRICS_PORT": "-2"}, "MESHSERVE_METRICS_PORT"),
        ({"MESHSERVE_SCALE_INTERVAL": "often"}, "MESHSERVE_SCALE_INTERVAL"),
        ({"MESHSERVE_PAYLOAD_LOG_QUEUE_BYTES": "much"}, "MESHSERVE_PAYLOAD_LOG_QUEUE_BYTES"),
    ],
)
def test_malformed_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(errors.ConfigError, match=named):
        settings.from_env(env)


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


def test_each_concern_reads_its_own_variables() -> None:
    env = {
        "MESHSERVE_LEASE_TTL": "4",
        "MESHSERVE_HOST": "127.0.0.1",
        "MESHSERVE_METRICS_PORT": "-1",
        "MESHSERVE_PROBE_PORT": "0",
        "MESHSERVE_METRICS_PER_MODEL": "True",
        "MESHSERVE_ROUTE_ATTEMPTS": "3",
        "MESHSERVE_DEFAULT_DEADLINE": "9.5",
        "MESHSERVE_SCALE_UP_RPM": "60",
        "MESHSERVE_DRAIN_TIMEOUT": "7",
        "MESHSERVE_RUNTIME": "triton",
        "MESHSERVE_RUNTIME_ENDPOINT": "127.0.0.1:8001",
        "MESHSERVE_RUNTIMES_DIR": "/opt/runtimes",
    }
    s = settings.from_env(env)
    assert s.kv == settings.KVSettings.from_env(env) and s.kv.lease_ttl_seconds == 4
    assert (s.service.host, s.service.metrics_port, s.service.probe_port) == ("127.0.0.1", -1, 0)
    assert s.service.metrics_per_model
    assert (s.routing.max_attempts, s.routing.default_deadline_seconds) == (3, 9.5)
    assert (s.scaling.scale_up_rpm, s.scaling.drain_timeout_seconds) == (60, 7.0)
    assert s.runtime == settings.RuntimeSettings(
        kind="triton", endpoint="127.0.0.1:8001", venv=pathlib.Path("/opt/runtimes")
    )


def test_a_request_gets_at_least_one_routing_attempt() -> None:
    assert settings.RoutingSettings.from_env({"MESHSERVE_ROUTE_ATTEMPTS": "0"}).max_attempts == 1


def test_a_concern_left_unset_keeps_its_defaults() -> None:
    assert settings.CacheSettings.from_env({}) == settings.CacheSettings()
    assert settings.ScalingSettings.from_env({}) == settings.ScalingSettings()
    assert settings.NodeSettings.from_env({}) == settings.NodeSettings()
    assert settings.ServiceSettings.from_env({}) == settings.ServiceSettings()
