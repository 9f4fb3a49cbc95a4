"""TLS settings come from ModelMesh's MM_TLS_* variables (and MESHSERVE_ETCD_*
for etcd); a combination that cannot work names the variables involved."""

from __future__ import annotations

import pathlib

import pytest

from mesh.core import errors, settings, tls_settings


def test_reads_modelmesh_tls_variables() -> None:
    s = settings.from_env(
        {
            "MM_TLS_KEY_CERT_PATH": "/certs/tls.crt",
            "MM_TLS_PRIVATE_KEY_PATH": "/certs/tls.key",
            "MM_TLS_CLIENT_AUTH": "REQUIRE",
            "MM_TLS_TRUST_CERT_PATH": "/certs/ca.crt, /certs/old-ca.crt",
            "MESHSERVE_TLS_PEER_SERVER_NAME": "modelmesh-serving.ns",
            "KV_STORE": "etcd:https://etcd:2379",
            "MESHSERVE_ETCD_CA_PATH": "/etcd/ca.crt",
            "MESHSERVE_ETCD_CERT_PATH": "/etcd/client.crt",
            "MESHSERVE_ETCD_KEY_PATH": "/etcd/client.key",
        }
    )
    t = s.tls
    assert t.enabled and t.key_cert_path == pathlib.Path("/certs/tls.crt")
    assert t.client_auth is tls_settings.ClientAuth.REQUIRE
    assert t.trust_cert_paths == (pathlib.Path("/certs/ca.crt"), pathlib.Path("/certs/old-ca.crt"))
    assert t.peer_server_name == "modelmesh-serving.ns"
    assert s.kv.endpoints == ("etcd:2379",)
    assert t.etcd_ca_path == pathlib.Path("/etcd/ca.crt")


_PAIR = {"MM_TLS_KEY_CERT_PATH": "/c", "MM_TLS_PRIVATE_KEY_PATH": "/k"}
_ETCD_PAIR = {"MESHSERVE_ETCD_CERT_PATH": "/c", "MESHSERVE_ETCD_KEY_PATH": "/k"}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MM_TLS_KEY_CERT_PATH": "/c"}, "MM_TLS_PRIVATE_KEY_PATH"),
        ({"MM_TLS_PRIVATE_KEY_PATH": "/k"}, "MM_TLS_KEY_CERT_PATH"),
        (_PAIR | {"MM_TLS_CLIENT_AUTH": "sometimes"}, "MM_TLS_CLIENT_AUTH"),
        (_PAIR | {"MM_TLS_CLIENT_AUTH": "require"}, "MM_TLS_TRUST_CERT_PATH"),
        ({"MM_TLS_CLIENT_AUTH": "require"}, "MM_TLS_KEY_CERT_PATH"),
        ({"MM_TLS_PRIVATE_KEY_PASSPHRASE": "secret"}, "MM_TLS_PRIVATE_KEY_PASSPHRASE"),
        ({"KV_STORE": "etcd:https://etcd:2379"}, "MESHSERVE_ETCD_CA_PATH"),
        (_ETCD_PAIR, "MESHSERVE_ETCD_CA_PATH"),
        (
            {"MESHSERVE_ETCD_CA_PATH": "/a", "MESHSERVE_ETCD_CERT_PATH": "/c"},
            "MESHSERVE_ETCD_KEY_PATH",
        ),
        ({"MESHSERVE_TLS_RELOAD_INTERVAL": "soon"}, "MESHSERVE_TLS_RELOAD_INTERVAL"),
    ],
)
def test_a_tls_setting_that_cannot_work_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(errors.ConfigError, match=named):
        tls_settings.TLSSettings.from_env(env)


def test_values_are_stripped_and_a_value_of_only_spaces_is_unset() -> None:
    t = tls_settings.TLSSettings.from_env(
        {
            "MM_TLS_KEY_CERT_PATH": " /certs/tls.crt\n",
            "MM_TLS_PRIVATE_KEY_PATH": "/certs/tls.key ",
            "MM_TLS_CLIENT_AUTH": " Optional ",
            "MESHSERVE_ETCD_CA_PATH": "  ",
            "MESHSERVE_ETCD_SERVER_NAME": " etcd.ns ",
        }
    )
    assert (t.key_cert_path, t.private_key_path) == (
        pathlib.Path("/certs/tls.crt"),
        pathlib.Path("/certs/tls.key"),
    )
    assert t.client_auth is tls_settings.ClientAuth.OPTIONAL
    assert t.etcd_ca_path is None
    assert t.etcd_server_name == "etcd.ns"


def test_optional_client_certificates_need_no_trust_file() -> None:
    t = tls_settings.TLSSettings.from_env(_PAIR | {"MM_TLS_CLIENT_AUTH": "optional"})
    assert t.client_auth is tls_settings.ClientAuth.OPTIONAL and t.trust_cert_paths == ()


@pytest.mark.parametrize("interval", ["0", "-1"])
def test_a_reload_interval_must_be_more_than_zero(interval: str) -> None:
    with pytest.raises(errors.ConfigError, match="MESHSERVE_TLS_RELOAD_INTERVAL: must be more"):
        tls_settings.TLSSettings.from_env({"MESHSERVE_TLS_RELOAD_INTERVAL": interval})


def test_the_reload_interval_defaults_to_ten_seconds_and_can_be_set() -> None:
    assert tls_settings.TLSSettings.from_env({}).reload_interval_seconds == 10.0
    read = tls_settings.TLSSettings.from_env({"MESHSERVE_TLS_RELOAD_INTERVAL": "2.5"})
    assert read.reload_interval_seconds == 2.5
