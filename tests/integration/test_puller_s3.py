"""Models from S3 (moto in server mode, with real request signing), pulled
into a real MLServer and answering; wrong secrets, missing objects and
hostile archives fail clearly and leave nothing loadable behind."""

from __future__ import annotations

import logging
import pathlib
import re
import time

import pytest

from mesh.core import errors, records
from meshserve import samples
from runtime_adapters import mlserver
from tests.integration import storage_fixtures as sf


def s3_record(path: str, key: str = "s3", **params: str) -> records.ModelRecord:
    return records.ModelRecord("sklearn", path, storage_key=key, storage_params=params)


@pytest.fixture
def config_dir(tmp_path: pathlib.Path, s3_server: sf.S3Server) -> pathlib.Path:
    folder = tmp_path / "storage-config"
    sf.write_config(folder, "s3", s3_server.config())
    return folder


async def test_a_model_folder_in_s3_is_pulled_loaded_and_answers(
    s3_server: sf.S3Server,
    mlserver_runtime: mlserver.MLServerAdapter,
    iris_sample: samples.Sample,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    s3_server.upload_folder(iris_sample.folder, "s3test/iris")
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    name = sf.model_id("s3-iris")
    folder = await puller.pull(name, s3_record("s3test/iris"))
    assert [p.name for p in folder.iterdir()] == ["model.joblib"]
    await sf.assert_serves(mlserver_runtime, folder, iris_sample)
    report = puller.reports[name]
    assert report.location == "s3://models/s3test/iris"
    assert report.bytes == iris_sample.model_file.stat().st_size
    await puller.remove(name)
    assert not folder.exists()


async def test_a_tar_gz_object_is_unpacked_and_answers(
    s3_server: sf.S3Server,
    mlserver_runtime: mlserver.MLServerAdapter,
    wine_sample: samples.Sample,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    s3_server.upload_file(
        sf.tar_gz(wine_sample.folder, tmp_path / "wine.tar.gz"), "s3test/wine.tar.gz"
    )
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    folder = await puller.pull(sf.model_id("s3-wine"), s3_record("s3test/wine.tar.gz"))
    assert [p.name for p in folder.iterdir()] == ["model.joblib"]
    await sf.assert_serves(mlserver_runtime, folder, wine_sample)


async def test_an_s3_uri_path_with_parameters_needs_no_key_file(
    s3_server: sf.S3Server,
    mlserver_runtime: mlserver.MLServerAdapter,
    iris_sample: samples.Sample,
    tmp_path: pathlib.Path,
) -> None:
    s3_server.upload_folder(iris_sample.folder, "s3test/uri-iris")
    folder = tmp_path / "storage-config"
    sf.write_config(folder, "default_s3", s3_server.config(default_bucket="elsewhere"))
    puller = sf.runtime_puller(mlserver_runtime, folder, tmp_path)
    pulled = await puller.pull(
        sf.model_id("s3-uri"), s3_record("s3://models/s3test/uri-iris", key="")
    )
    await sf.assert_serves(mlserver_runtime, pulled, iris_sample)


async def test_a_wrong_secret_fails_clearly_without_the_secret_and_a_fixed_file_works_at_once(
    s3_server: sf.S3Server,
    mlserver_runtime: mlserver.MLServerAdapter,
    iris_sample: samples.Sample,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    s3_server.upload_folder(iris_sample.folder, "s3test/secret-iris")
    wrong = "NotTheRealSecret-x9Qz7Lw2Vb8Kc3Jd5Hf1Gs4Ta6Ye0Ru"
    folder = tmp_path / "storage-config"
    config = sf.write_config(folder, "team-a", s3_server.config(secret_access_key=wrong))
    puller = sf.runtime_puller(mlserver_runtime, folder, tmp_path)
    name = sf.model_id("s3-secret")
    with pytest.raises(errors.ModelLoadFailed) as info:
        await puller.pull(name, s3_record("s3test/secret-iris", key="team-a"))
    message = info.value.message
    assert f"model {name!r}" in message
    assert "storage key 'team-a'" in message
    assert "s3://models/s3test/secret-iris" in message
    assert "access denied" in message and "SignatureDoesNotMatch" in message
    assert wrong not in message and wrong not in caplog.text
    assert s3_server.secret_access_key not in message
    assert sf.nothing_loadable(mlserver_runtime.config.model_dir, name)
    # The Secret is fixed: the next pull reads the new file, no restart.
    config.write_text(config.read_text().replace(wrong, s3_server.secret_access_key))
    pulled = await puller.pull(name, s3_record("s3test/secret-iris", key="team-a"))
    await sf.assert_serves(mlserver_runtime, pulled, iris_sample)


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        (
            "s3test/absent",
            {},
            "s3://models/s3test/absent (storage key 's3') failed: nothing is stored",
        ),
        ("s3test/iris", {"bucket": "no-such-bucket"}, "the bucket of s3://no-such-bucket"),
        ("s3test/iris", {"endpoint_url": "http://127.0.0.1:9"}, "is unreachable"),
    ],
)
async def test_missing_objects_buckets_and_endpoints_are_named(
    s3_server: sf.S3Server,
    mlserver_runtime: mlserver.MLServerAdapter,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    path: str,
    params: dict[str, str],
    words: str,
) -> None:
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    name = sf.model_id("s3-missing")
    t0 = time.monotonic()
    with pytest.raises(errors.ModelLoadFailed, match=re.escape(words)):
        await puller.pull(name, s3_record(path, **params))
    assert time.monotonic() - t0 < 20
    assert sf.nothing_loadable(mlserver_runtime.config.model_dir, name)


async def test_a_zip_slip_archive_in_s3_is_refused(
    s3_server: sf.S3Server,
    mlserver_runtime: mlserver.MLServerAdapter,
    iris_sample: samples.Sample,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    evil = sf.zip_of(iris_sample.folder, tmp_path / "evil.zip", {"../../evil.sh": b"#!/bin/sh"})
    s3_server.upload_file(evil, "s3test/evil.zip")
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    name = sf.model_id("s3-slip")
    with pytest.raises(
        errors.ModelLoadFailed, match=re.escape("'../../evil.sh' leads outside the model folder")
    ):
        await puller.pull(name, s3_record("s3test/evil.zip"))
    model_dir = mlserver_runtime.config.model_dir
    assert sf.nothing_loadable(model_dir, name)
    assert not (model_dir.parent / "evil.sh").exists() and not (model_dir / "evil.sh").exists()
