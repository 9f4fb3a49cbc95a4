"""Models from an HTTP server, pulled into a real MLServer and answering:
single files and archives; hostile archives refused; a transfer cut off or
cancelled half way leaves nothing loadable and a retry succeeds; a wrong
token is refused without showing it."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import re

import pytest

from mesh.core import errors, records
from meshserve import samples
from puller import model_puller
from runtime_adapters import mlserver
from tests.integration import storage_fixtures as sf

WAIT = 30.0
"""Seconds to wait for what must happen: generous, as a busy machine is
slow, not wrong."""


@pytest.fixture
def config_dir(tmp_path: pathlib.Path, http_server: sf.HTTPServer) -> pathlib.Path:
    folder = tmp_path / "storage-config"
    sf.write_config(folder, "web", {"type": "http", "url": f"{http_server.url}/"})
    sf.write_config(
        folder,
        "private",
        {
            "type": "http",
            "url": f"{http_server.url}/private/",
            "headers": {"Authorization": f"Bearer {http_server.token}"},
        },
    )
    return folder


def web(path: str, key: str = "web") -> records.ModelRecord:
    return records.ModelRecord("sklearn", path, key)


async def test_a_model_file_at_a_url_is_pulled_loaded_and_answers(
    http_server: sf.HTTPServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    iris_sample: samples.Sample,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    http_server.put(iris_sample.model_file, "iris.joblib")
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    folder = await puller.pull(sf.model_id("http-iris"), web("iris.joblib"))
    assert [p.name for p in folder.iterdir()] == ["iris.joblib"]
    await sf.assert_serves(mlserver_runtime, folder, iris_sample)


async def test_a_zip_at_a_full_url_is_unpacked_and_answers(
    http_server: sf.HTTPServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    wine_sample: samples.Sample,
    tmp_path: pathlib.Path,
) -> None:
    http_server.put(sf.zip_of(wine_sample.folder, tmp_path / "wine.zip"), "wine.zip")
    puller = sf.runtime_puller(mlserver_runtime, tmp_path / "no-config", tmp_path)
    url = f"{http_server.url}/wine.zip?download=1"
    folder = await puller.pull(sf.model_id("http-zip"), web(url, key=""))
    assert [p.name for p in folder.iterdir()] == ["model.joblib"]
    await sf.assert_serves(mlserver_runtime, folder, wine_sample)


async def test_headers_from_the_storage_config_authorise_and_a_wrong_token_is_hidden(
    http_server: sf.HTTPServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    iris_sample: samples.Sample,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    http_server.put(iris_sample.model_file, "secret-iris.joblib")
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    folder = await puller.pull(sf.model_id("http-private"), web("secret-iris.joblib", "private"))
    await sf.assert_serves(mlserver_runtime, folder, iris_sample)
    wrong = "Bearer wrong-token-0123456789"
    sf.write_config(
        config_dir,
        "private",
        {"type": "http", "url": f"{http_server.url}/private/", "headers": {"Authorization": wrong}},
    )
    with pytest.raises(errors.ModelLoadFailed) as info:
        await puller.pull(sf.model_id("http-wrong"), web("secret-iris.joblib", "private"))
    assert "access denied" in info.value.message and "HTTP 401" in info.value.message
    assert "storage key 'private'" in info.value.message
    assert wrong not in info.value.message and wrong not in caplog.text


async def test_a_transfer_cut_off_half_way_leaves_nothing_and_a_retry_succeeds(
    http_server: sf.HTTPServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    wine_sample: samples.Sample,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    http_server.put(wine_sample.model_file, "wine.joblib")
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    name = sf.model_id("http-cut")
    with pytest.raises(errors.ModelLoadFailed, match="broke off"):
        await puller.pull(name, web("truncate/wine.joblib"))
    model_dir = mlserver_runtime.config.model_dir
    assert sf.nothing_loadable(model_dir, name)
    with pytest.raises(errors.MeshError):
        await mlserver_runtime.load(name, "sklearn", model_dir / name)
    folder = await puller.pull(name, web("wine.joblib"))
    await sf.assert_serves(mlserver_runtime, folder, wine_sample)


async def test_a_pull_cancelled_half_way_leaves_nothing_and_a_retry_succeeds(
    http_server: sf.HTTPServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    wine_sample: samples.Sample,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    http_server.put(wine_sample.model_file, "wine-stall.joblib")
    http_server.halfway.clear()
    http_server.release.clear()
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    name = sf.model_id("http-cancel")
    task = asyncio.create_task(puller.pull(name, web("stall/wine-stall.joblib")))
    assert await asyncio.to_thread(http_server.halfway.wait, WAIT)
    # The puller opened its staging file before it asked for the file, so
    # the pull is now half way, in staging (the half it was sent waits in
    # its read: a 100 KB model is less than one chunk).
    staging = f"{model_puller.STAGING_PREFIX}{name}-"
    model_dir = mlserver_runtime.config.model_dir
    assert any(p.name.startswith(staging) for p in model_dir.iterdir())
    task.cancel()
    http_server.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sf.nothing_loadable(model_dir, name)
    folder = await puller.pull(name, web("wine-stall.joblib"))
    await sf.assert_serves(mlserver_runtime, folder, wine_sample)


@pytest.mark.parametrize("kind", ["zip-slip", "tar-traversal"])
async def test_archives_with_entries_outside_the_folder_are_refused(
    http_server: sf.HTTPServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    iris_sample: samples.Sample,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    kind: str,
) -> None:
    if kind == "zip-slip":
        evil = sf.zip_of(iris_sample.folder, tmp_path / "evil.zip", {"../../escaped.txt": b"x"})
    else:
        evil = sf.traversal_tar(iris_sample.folder, tmp_path / "evil.tar.gz")
    served = http_server.put(evil, f"{kind}-{evil.name}")
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    name = sf.model_id(kind)
    with pytest.raises(errors.ModelLoadFailed) as info:
        await puller.pull(name, web(served))
    assert "'../../escaped.txt' leads outside the model folder" in info.value.message
    model_dir = mlserver_runtime.config.model_dir
    assert sf.nothing_loadable(model_dir, name)
    assert not (model_dir.parent / "escaped.txt").exists()
    assert not (model_dir / "escaped.txt").exists()


async def test_a_missing_file_is_named(
    mlserver_runtime: mlserver.MLServerAdapter,
    config_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    http_server: sf.HTTPServer,
) -> None:
    puller = sf.runtime_puller(mlserver_runtime, config_dir, tmp_path)
    words = re.escape("absent.joblib does not exist (HTTP 404)")
    with pytest.raises(errors.ModelLoadFailed, match=words):
        await puller.pull(sf.model_id("http-404"), web("absent.joblib"))
