"""On a cluster with neither KServe nor meshserve's copy of its
InferenceService CRD (a production install that skipped
``deploy/crd/inferenceservice``), the controller serves Predictors as ever:
the missing resource is not an error."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from meshserve import samples
from tests.integration import controller_fixtures as cf
from tests.integration import mesh_fixtures
from tests.kube import crds
from tests.kube.apiserver import FakeApiServer


@pytest.fixture(scope="module")
def apiserver() -> Iterator[FakeApiServer]:
    without = [c for c in crds.load() if c["spec"]["names"]["kind"] != "InferenceService"]
    assert len(without) == len(crds.KINDS)
    server = FakeApiServer(without, namespaces=("default", cf.NS), bookmark_interval=1.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_predictors_are_served_when_the_inference_service_crd_is_absent(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = cf.unique_name("no-kserve")
    kube.create("predictors", cf.predictor_doc(name, models["iris"].folder))
    cf.wait_for(lambda: cf.loaded(kube, name), what="Loaded")
    got = mesh_fixtures.infer(mesh_node.endpoint, name, models["iris"].inputs)
    np.testing.assert_array_equal(got, models["iris"].expected)
    assert ctl[0].leading
