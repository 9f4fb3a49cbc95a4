"""Each backend reads ModelMesh Serving's fields, refuses an incomplete
configuration by naming the field, and names failures without credentials."""

from __future__ import annotations

import argparse
import hashlib
import pathlib

import botocore.exceptions
import pytest

from meshserve import cli, local_mesh
from puller import azure_blob, disk_cache, factory, gcs, http_url, s3, store


def test_s3_reads_modelmesh_fields() -> None:
    s = s3.settings_from(
        {
            "type": "s3",
            "access_key_id": "AKIA",
            "secret_access_key": "secret",
            "endpoint_url": "s3.eu.example.com",
            "default_bucket": "models",
        }
    )
    assert (s.bucket, s.endpoint_url, s.region) == (
        "models",
        "https://s3.eu.example.com",
        "us-east-1",
    )


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"type": "s3"}, '"bucket"'),
        ({"bucket": "b", "access_key_id": "AKIA"}, "go together"),
        ({"bucket": 3}, "must be a string"),
    ],
)
def test_s3_refuses_incomplete_configuration(fields: dict[str, object], words: str) -> None:
    with pytest.raises(store.BadConfig, match=words):
        s3.settings_from(fields)


def test_s3_errors_are_named_from_the_code_not_the_request() -> None:
    denied = botocore.exceptions.ClientError(
        {
            "Error": {"Code": "SignatureDoesNotMatch", "Message": "sig"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        "ListObjectsV2",
    )
    e = s3.describe_error(denied, "s3://b/m", "http://x")
    assert isinstance(e, store.AccessDenied) and "SignatureDoesNotMatch" in e.message
    missing = botocore.exceptions.ClientError(
        {"Error": {"Code": "NoSuchBucket"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "List"
    )
    assert isinstance(s3.describe_error(missing, "s3://b/m", ""), store.NotFound)
    down = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3.describe_error(down, "s3://b/m", "http://127.0.0.1:1"), store.Unreachable)
    rotten = botocore.exceptions.FlexibleChecksumError(error_msg="CRC32 mismatch")
    e = s3.describe_error(rotten, "s3://b/m/model.joblib", "")
    assert isinstance(e, store.Corrupt) and "checksum mismatch" in e.message


def test_s3_md5_comes_only_from_single_part_etags() -> None:
    assert (
        s3.md5_from_etag('"398533d48111e9f664b1f64cb10c4b63"') == "398533d48111e9f664b1f64cb10c4b63"
    )
    assert s3.md5_from_etag('"398533d48111e9f664b1f64cb10c4b63-4"') == ""


def test_gcs_reads_modelmesh_fields() -> None:
    g = gcs.settings_from({"type": "gcs", "bucket": "b", "private_key": "k", "client_email": "e"})
    assert (g.bucket, g.client_email, g.token_uri) == ("b", "e", gcs.DEFAULT_TOKEN_URI)
    with pytest.raises(store.BadConfig, match="go together"):
        gcs.settings_from({"bucket": "b", "private_key": "k"})
    # GCS lists MD5s in base64; this one is of b"abc" * 100.
    assert gcs.md5_hex("9XEResvYFTyNw8gbiBd3Og==") == hashlib.md5(b"abc" * 100).hexdigest()


def test_azure_reads_modelmesh_fields_and_refuses_service_principals() -> None:
    a = azure_blob.settings_from({"account_name": "acc", "container": "models"})
    assert (a.account_name, a.container) == ("acc", "models")
    with pytest.raises(store.BadConfig, match="azure-identity"):
        azure_blob.settings_from(
            {"account_name": "a", "container": "c", "client_id": "i", "client_secret": "s"}
        )
    with pytest.raises(store.BadConfig, match='"container"'):
        azure_blob.settings_from({"account_name": "a"})


def test_http_joins_the_path_below_the_url_and_takes_headers() -> None:
    h = http_url.settings_from(
        {"url": "https://host/base/", "headers": {"Authorization": "Bearer t", "X": ["1", "2"]}}
    )
    assert h.headers == (("Authorization", "Bearer t"), ("X", "1"), ("X", "2"))
    assert http_url.join_url(h.url, "models/iris.zip") == "https://host/base/models/iris.zip"
    assert http_url.join_url("https://h/m.zip?sig=1", "") == "https://h/m.zip?sig=1"
    assert http_url.file_name("https://h/a/model%20v1.tar.gz?x=1") == "model v1.tar.gz"
    with pytest.raises(store.BadConfig, match="http:// or https://"):
        http_url.settings_from({"url": "ftp://h/x"})


def test_make_puller_sweeps_leftovers(tmp_path: pathlib.Path) -> None:
    model_dir = tmp_path / "models"
    (model_dir / "left-behind").mkdir(parents=True)
    puller = factory.make_puller(model_dir, tmp_path, None)
    assert isinstance(puller, disk_cache.DiskCachePuller)
    assert [p.name for p in model_dir.iterdir()] == [disk_cache.CACHE_FOLDER]


def test_up_passes_an_absolute_storage_config_folder_to_each_node(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.chdir(tmp_path)
    parser = cli._parser()
    args: argparse.Namespace = parser.parse_args(["up", "--storage-config", "sc", "--nodes", "2"])
    mesh = local_mesh.LocalMesh(cli._options(args))
    assert mesh.node_env(1)["MESHSERVE_STORAGE_CONFIG"] == str(tmp_path / "sc")
    plain = local_mesh.LocalMesh(cli._options(parser.parse_args(["up"])))
    assert plain.node_env(0)["MESHSERVE_STORAGE_CONFIG"] == ""
