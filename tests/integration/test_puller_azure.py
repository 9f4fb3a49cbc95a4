"""Models from Azure Blob Storage (Azurite), pulled into a real MLServer and
answering; a wrong account key is refused without showing the key."""

from __future__ import annotations

import base64
import logging
import pathlib

import pytest

from mesh.core import errors, records
from meshserve import samples
from runtime_adapters import mlserver
from tests.integration import storage_fixtures as sf


async def test_a_model_folder_in_azure_blob_is_pulled_loaded_and_answers(
    azurite_server: sf.AzuriteServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    diabetes_sample: samples.Sample,
    tmp_path: pathlib.Path,
) -> None:
    azurite_server.upload_folder(diabetes_sample.folder, "aztest/diabetes")
    config = tmp_path / "storage-config"
    sf.write_config(config, "azure", azurite_server.config())
    puller = sf.runtime_puller(mlserver_runtime, config, tmp_path)
    name = sf.model_id("az-diabetes")
    folder = await puller.pull(name, records.ModelRecord("sklearn", "aztest/diabetes", "azure"))
    await sf.assert_serves(mlserver_runtime, folder, diabetes_sample)
    assert puller.reports[name].location == "azure://devstoreaccount1/models/aztest/diabetes"


async def test_a_wrong_account_key_is_refused_without_showing_it(
    azurite_server: sf.AzuriteServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    iris_sample: samples.Sample,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    azurite_server.upload_folder(iris_sample.folder, "aztest/iris")
    wrong = base64.b64encode(
        b"not the account key, 64 bytes long............................"
    ).decode()
    config = tmp_path / "storage-config"
    sf.write_config(
        config,
        "azure",
        azurite_server.config(connection_string=azurite_server.connection_string(wrong)),
    )
    puller = sf.runtime_puller(mlserver_runtime, config, tmp_path)
    name = sf.model_id("az-wrong")
    with pytest.raises(errors.ModelLoadFailed) as info:
        await puller.pull(name, records.ModelRecord("sklearn", "aztest/iris", "azure"))
    message = info.value.message
    assert "storage key 'azure'" in message and "access denied" in message
    assert wrong not in message and wrong not in caplog.text
    assert sf.AZURITE_KEY not in message
    assert sf.nothing_loadable(mlserver_runtime.config.model_dir, name)


async def test_a_missing_container_is_named(
    azurite_server: sf.AzuriteServer,
    mlserver_runtime: mlserver.MLServerAdapter,
    tmp_path: pathlib.Path,
) -> None:
    config = tmp_path / "storage-config"
    sf.write_config(config, "azure", azurite_server.config(container="absent"))
    puller = sf.runtime_puller(mlserver_runtime, config, tmp_path)
    with pytest.raises(errors.ModelLoadFailed, match="does not exist \\(ContainerNotFound\\)"):
        await puller.pull(sf.model_id("az-none"), records.ModelRecord("sklearn", "m", "azure"))
