"""Fixtures for tests against the stand-in API server: the server itself
(with the project's CRDs, see :mod:`tests.kube.crds`), and a configuration of
the official ``kubernetes`` client that points at it through a kubeconfig
file, as a user's would. ``tests/kube/conftest.py`` exposes them; other test
modules import what they need from here."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import kubernetes
import pytest
import yaml

from tests.kube import crds
from tests.kube.apiserver import FakeApiServer


def client_configuration(
    server: FakeApiServer, folder: pathlib.Path
) -> kubernetes.client.Configuration:
    """A client configuration loaded from a kubeconfig file for ``server``."""
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(server.kubeconfig()))
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(path), client_configuration=config
    )
    return config


@pytest.fixture(scope="module")
def apiserver() -> Iterator[FakeApiServer]:
    """A stand-in API server with the project's CRDs and namespaces
    ``default`` and ``meshserve``, shared by a test module."""
    server = FakeApiServer(crds.load(), namespaces=("default", "meshserve"), bookmark_interval=0.5)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kube_config(
    apiserver: FakeApiServer, tmp_path_factory: pytest.TempPathFactory
) -> kubernetes.client.Configuration:
    return client_configuration(apiserver, tmp_path_factory.mktemp("kube"))


@pytest.fixture
def api(kube_config: kubernetes.client.Configuration) -> Iterator[kubernetes.client.ApiClient]:
    with kubernetes.client.ApiClient(kube_config) as client:
        yield client
