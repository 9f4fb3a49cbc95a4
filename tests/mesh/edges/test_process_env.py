"""A node's environment completed at the edge: the etcd_connection file, the host name."""

from __future__ import annotations

import pathlib
import socket

import pytest

from mesh.core import errors, settings
from mesh.edges import process_env


def test_reads_modelmesh_etcd_connection_file(tmp_path: pathlib.Path) -> None:
    conn = tmp_path / "etcd_connection"
    conn.write_text(
        '{"endpoints": "https://etcd-0:2379,https://etcd-1:2379", "root_prefix": "modelmesh",'
        ' "certificate_file": "/etc/etcd/ca.crt", "client_certificate_file": "/etc/etcd/tls.crt",'
        ' "client_key_file": "/etc/etcd/tls.key"}'
    )
    s = settings.from_env(
        process_env.completed({"KV_STORE": f"etcd:{conn}", "MESHSERVE_ETCD_SERVER_NAME": "etcd"})
    )
    assert s.kv.endpoints == ("etcd-0:2379", "etcd-1:2379")
    assert s.kv.prefix == "modelmesh/mm"
    assert s.tls.etcd_ca_path == pathlib.Path("/etc/etcd/ca.crt")
    assert s.tls.etcd_cert_path == pathlib.Path("/etc/etcd/tls.crt")
    assert s.tls.etcd_key_path == pathlib.Path("/etc/etcd/tls.key")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("not json", "not valid JSON"),
        ("{}", "endpoints"),
        ('{"endpoints": "a:1", "password": "x"}', "'password' is not supported"),
    ],
)
def test_a_bad_etcd_connection_file_is_named(
    tmp_path: pathlib.Path, text: str, complaint: str
) -> None:
    conn = tmp_path / "etcd_connection"
    conn.write_text(text)
    with pytest.raises(errors.ConfigError, match=complaint) as info:
        process_env.completed({"KV_STORE": f"etcd:{conn}"})
    assert str(conn) in info.value.message
    with pytest.raises(errors.ConfigError, match="cannot read"):
        process_env.completed({"KV_STORE": f"etcd:{tmp_path / 'absent'}"})


def test_the_instance_id_defaults_to_the_host_name_and_a_set_one_is_kept() -> None:
    assert process_env.completed({})["MM_INSTANCE_ID"] == socket.gethostname()
    assert process_env.completed({"MM_INSTANCE_ID": "n7"})["MM_INSTANCE_ID"] == "n7"


def test_pure_settings_refuse_an_unread_etcd_connection_file() -> None:
    with pytest.raises(errors.ConfigError, match="names a file"):
        settings.from_env({"KV_STORE": "etcd:/etc/etcd_connection"})
