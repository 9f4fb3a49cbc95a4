"""Which storage configuration a model uses, as ModelMesh Serving decides it:
the key's file, ``default`` / ``default_<type>`` without a key, parameters
over fields; files re-read when they change; never a secret in a message."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping

import pytest

from puller import storage_config, store

S3 = {
    "type": "s3",
    "access_key_id": "AKIAEXAMPLE",
    "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRET",
    "endpoint_url": "http://minio:9000",
    "region": "us-south",
    "default_bucket": "models",
}


def snap(**configs: Mapping[str, object]) -> storage_config.Snapshot:
    return storage_config.Snapshot(configs=configs, origin="test")


def test_a_storage_key_picks_its_file_and_parameters_override_its_fields() -> None:
    source = storage_config.resolve(
        "localMinIO", {"bucket": "other", "region": "eu"}, "iris/model", snap(localMinIO=S3)
    )
    assert source.type == "s3"
    assert source.key == "localMinIO"
    assert source.path == "iris/model"
    assert source.fields["bucket"] == "other"
    assert source.fields["region"] == "eu"
    assert source.fields["endpoint_url"] == "http://minio:9000"


def test_default_bucket_is_read_as_the_bucket() -> None:
    source = storage_config.resolve("k", {}, "iris", snap(k=S3))
    assert source.fields["bucket"] == "models"


def test_without_a_key_default_type_wins_over_default() -> None:
    gcs = {"type": "gcs", "bucket": "g"}
    configs = snap(default=S3, default_gcs=gcs)
    assert storage_config.resolve("", {"type": "gcs"}, "m", configs).key == "default_gcs"
    assert storage_config.resolve("", {}, "m", configs).key == "default"


def test_without_a_key_or_default_a_relative_path_stays_local() -> None:
    source = storage_config.resolve("", {}, "models/iris", snap())
    assert (source.type, source.key, source.path) == ("local", "", "models/iris")


def test_absolute_and_file_paths_are_local_even_with_a_default() -> None:
    configs = snap(default=S3)
    assert storage_config.resolve("", {}, "/srv/models/iris", configs).type == "local"
    assert storage_config.resolve("", {}, "file:///srv/iris", configs).type == "local"


def test_parameters_alone_can_describe_the_storage() -> None:
    source = storage_config.resolve("", {"type": "http", "url": "https://h/m/"}, "a.zip", snap())
    assert (source.type, source.key, source.fields["url"]) == ("http", "", "https://h/m/")


def test_uri_paths_name_type_bucket_and_key() -> None:
    source = storage_config.resolve("", {}, "s3://bucket-a/models/iris", snap(default_s3=S3))
    assert (source.type, source.key, source.path) == ("s3", "default_s3", "models/iris")
    assert source.fields["bucket"] == "bucket-a"
    assert source.fields["access_key_id"] == "AKIAEXAMPLE"
    gs = storage_config.resolve("", {}, "gs://b/m", snap())
    assert (gs.type, gs.fields["bucket"], gs.path) == ("gcs", "b", "m")
    web = storage_config.resolve("", {}, "https://host/m.joblib?sig=1", snap())
    assert (web.type, web.fields["url"], web.path) == ("http", "https://host/m.joblib?sig=1", "")


def test_a_uri_of_another_type_than_the_key_is_refused() -> None:
    with pytest.raises(store.BadConfig, match="s3 URI but storage key 'g' is of type 'gcs'"):
        storage_config.resolve("g", {}, "s3://b/m", snap(g={"type": "gcs", "bucket": "x"}))


def test_parameters_naming_a_type_accept_a_uri_of_another_type_than_the_key() -> None:
    source = storage_config.resolve(
        "g", {"type": "s3"}, "s3://b/m", snap(g={"type": "gcs", "bucket": "x"})
    )
    assert (source.type, source.fields["bucket"], source.path) == ("s3", "b", "m")


def test_a_broken_default_file_is_reported_and_an_absent_one_means_no_key() -> None:
    broken = storage_config.Snapshot(problems={"default_s3": "storage config broken"})
    with pytest.raises(store.BadConfig, match="storage config broken"):
        storage_config.resolve("", {}, "s3://b/m", broken)
    source = storage_config.resolve("", {"type": "s3"}, "m", snap(default=S3))
    assert (source.type, source.key, source.fields) == ("s3", "", {"type": "s3"})


def test_a_missing_key_names_the_key_and_the_keys_there_but_no_values() -> None:
    with pytest.raises(store.BadConfig) as info:
        storage_config.resolve("nope", {}, "m", snap(localMinIO=S3, other={"type": "gcs"}))
    assert "'nope' is not in the storage configuration" in info.value.message
    assert "localMinIO, other" in info.value.message
    assert S3["secret_access_key"] not in info.value.message


@pytest.mark.parametrize(
    ("config", "words"),
    [({"bucket": "b"}, 'no "type"'), ({"type": "ftp"}, "'ftp' is not supported")],
)
def test_an_unusable_type_is_refused(config: dict[str, str], words: str) -> None:
    with pytest.raises(store.BadConfig, match=words):
        storage_config.resolve("k", {}, "m", snap(k=config))


def test_type_aliases_are_normalised() -> None:
    for alias, canonical in [("https", "http"), ("GS", "gcs"), ("S3", "s3")]:
        assert storage_config.normalise_type(alias) == canonical


def test_secrets_cover_credentials_and_connection_string_parts() -> None:
    fields = {
        "type": "azure",
        "connection_string": "AccountName=acc;AccountKey=c2VjcmV0a2V5dmFsdWU=;BlobEndpoint=x",
        "headers": {"Authorization": "Bearer tok-123456"},
        "account_name": "acc",
    }
    secrets = storage_config.Source("azure", "k", fields, "m").secrets()
    assert "c2VjcmV0a2V5dmFsdWU=" in secrets
    assert "Bearer tok-123456" in secrets
    assert "acc" not in secrets
    text = "failed with key c2VjcmV0a2V5dmFsdWU= and Bearer tok-123456"
    assert storage_config.redact(text, secrets) == "failed with key *** and ***"


def test_config_folder_reads_one_file_per_key_skipping_hidden_entries(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "localMinIO").write_text(json.dumps(S3))
    (tmp_path / "..data").mkdir()
    (tmp_path / ".hidden").write_text("{}")
    snapshot = storage_config.ConfigDir(tmp_path).snapshot()
    assert list(snapshot.configs) == ["localMinIO"]
    assert snapshot.configs["localMinIO"]["type"] == "s3"


def test_an_edited_file_is_used_at_the_next_read_without_a_restart(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "k"
    config.write_text(json.dumps({"type": "s3", "bucket": "old"}))
    folder = storage_config.ConfigDir(tmp_path)
    assert folder.snapshot().configs["k"]["bucket"] == "old"
    config.write_text(json.dumps({"type": "s3", "bucket": "new-bucket"}))
    st = config.stat()
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert folder.snapshot().configs["k"]["bucket"] == "new-bucket"
    (tmp_path / "second").write_text(json.dumps({"type": "gcs", "bucket": "g"}))
    config.unlink()
    assert list(folder.snapshot().configs) == ["second"]


def test_a_kubernetes_style_atomic_swap_is_picked_up(tmp_path: pathlib.Path) -> None:
    """A mounted Secret's files are links through ``..data``, which
    Kubernetes repoints at a new folder when the Secret changes."""
    for version, bucket in (("v1", "one"), ("v2", "two")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "k").write_text(json.dumps({"type": "s3", "bucket": bucket}))
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "k").symlink_to("..data/k")
    folder = storage_config.ConfigDir(tmp_path)
    assert folder.snapshot().configs["k"]["bucket"] == "one"
    (tmp_path / "..data_tmp").symlink_to("v2")
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")
    assert folder.snapshot().configs["k"]["bucket"] == "two"


def test_a_malformed_file_is_reported_without_its_content(tmp_path: pathlib.Path) -> None:
    (tmp_path / "broken").write_text('{"type": "s3", "secret_access_key": "hunter2hunter2"')
    (tmp_path / "list").write_text('["s3"]')
    snapshot = storage_config.ConfigDir(tmp_path).snapshot()
    assert "not valid JSON" in snapshot.problems["broken"]
    assert "hunter2" not in snapshot.problems["broken"]
    assert "not a JSON object" in snapshot.problems["list"]
    with pytest.raises(store.BadConfig, match="'broken' is not valid JSON"):
        storage_config.resolve("broken", {}, "m", snapshot)


def test_a_missing_folder_is_named_when_a_key_is_asked_for(tmp_path: pathlib.Path) -> None:
    snapshot = storage_config.ConfigDir(tmp_path / "absent").snapshot()
    with pytest.raises(store.BadConfig, match="absent does not exist"):
        storage_config.resolve("k", {}, "m", snapshot)
