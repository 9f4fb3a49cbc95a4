"""Models from Google Cloud Storage (gcp-storage-emulator), pulled into a
real MLServer and answering; a missing bucket or object is named."""

from __future__ import annotations

import pathlib

import pytest

from mesh.core import errors, records
from meshserve import samples
from runtime_adapters import mlserver
from tests.integration import storage_fixtures as sf


@pytest.fixture
def config_dir(tmp_path: pathlib.Path, gcs_server: sf.GCSServer) -> pathlib.Path:
    folder = tmp_path / "storage-config"
    sf.write_config(folder, "gcs", gcs_server.config())
    return folder


async def test_a_model_folder_in_gcs_is_pulled_loaded_and_answers(
    gcs_server: sf.GCSServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    wine_sample: samples.Sample,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    gcs_server.upload_folder(wine_sample.folder, "gcstest/wine")
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    name = sf.model_id("gcs-wine")
    folder = await puller.pull(name, records.ModelRecord("sklearn", "gcstest/wine", "gcs"))
    await sf.assert_serves(mlserver_runtime, folder, wine_sample)
    assert puller.reports[name].location == "gs://models/gcstest/wine"


async def test_a_gs_uri_with_a_default_gcs_key_is_pulled(
    gcs_server: sf.GCSServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    iris_sample: samples.Sample,
    tmp_path: pathlib.Path,
) -> None:
    gcs_server.upload_folder(iris_sample.folder, "gcstest/iris")
    folder = tmp_path / "storage-config"
    sf.write_config(folder, "default_gcs", gcs_server.config(bucket="not-this-one"))
    puller = sf.runtime_puller(mlserver_runtime, folder, tmp_path)
    pulled = await puller.pull(
        sf.model_id("gcs-uri"), records.ModelRecord("sklearn", "gs://models/gcstest/iris")
    )
    await sf.assert_serves(mlserver_runtime, pulled, iris_sample)


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        (
            "gcstest/absent",
            {},
            "gs://models/gcstest/absent \\(storage key 'gcs'\\) failed: nothing",
        ),
        ("gcstest/iris", {"bucket": "no-such-bucket"}, "does not exist"),
    ],
)
async def test_missing_objects_and_buckets_are_named(
    gcs_server: sf.GCSServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    path: str,
    params: dict[str, str],
    words: str,
) -> None:
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    name = sf.model_id("gcs-missing")
    with pytest.raises(errors.ModelLoadFailed, match=words):
        await puller.pull(name, records.ModelRecord("sklearn", path, "gcs", params))
    assert sf.nothing_loadable(mlserver_runtime.config.model_dir, name)
