"""A ModelMesh etcd_connection file's text stands for KV_STORE, the key prefix
and the etcd TLS files; what meshserve cannot use is refused by name."""

from __future__ import annotations

import json

import pytest

from mesh.core import errors
from mesh.core.etcd_connection import etcd_connection_env


def _env(connection: dict[str, str], **env: str) -> dict[str, str]:
    return etcd_connection_env(json.dumps(connection), "/etc/etcd/etcd_connection", env)


def test_endpoints_alone_give_kv_store_only() -> None:
    assert _env({"endpoints": "http://etcd:2379"}) == {"KV_STORE": "etcd:http://etcd:2379"}


def test_the_root_prefix_goes_above_the_key_prefix() -> None:
    assert _env({"endpoints": "e:1", "root_prefix": "/mm-root/"})["MM_KVSTORE_PREFIX"] == (
        "mm-root/mm"
    )
    with_prefix = _env({"endpoints": "e:1", "root_prefix": "r"}, MM_KVSTORE_PREFIX="/prod/")
    assert with_prefix["MM_KVSTORE_PREFIX"] == "r/prod"


def test_tls_files_already_set_in_the_environment_are_kept() -> None:
    out = _env(
        {"endpoints": "https://e:1", "certificate_file": "/f/ca", "client_key_file": "/f/k"},
        MESHSERVE_ETCD_CA_PATH="/mine/ca",
    )
    assert "MESHSERVE_ETCD_CA_PATH" not in out
    assert out["MESHSERVE_ETCD_KEY_PATH"] == "/f/k"


@pytest.mark.parametrize(
    ("field", "instead"),
    [
        ("certificate", "certificate_file"),
        ("userid", "client certificates"),
        ("password", "client certificates"),
    ],
)
def test_inline_certificates_and_passwords_are_refused(field: str, instead: str) -> None:
    with pytest.raises(errors.ConfigError, match=f"'{field}' is not supported; use {instead}"):
        _env({"endpoints": "e:1", field: "x"})


@pytest.mark.parametrize("text", ["[]", '{"endpoints": ""}', "not json"])
def test_a_file_without_endpoints_names_its_path(text: str) -> None:
    with pytest.raises(errors.ConfigError, match="KV_STORE: /etc/etcd/etcd_connection"):
        etcd_connection_env(text, "/etc/etcd/etcd_connection", {})
