"""A running node survives etcd going away and coming back."""

from __future__ import annotations

import pathlib
import time

import numpy as np

from mesh.edges import etcd_process
from meshserve import samples
from tests.integration import mesh_fixtures


def test_serves_loaded_models_while_etcd_is_down_and_resumes_after_restart(
    mesh_node: mesh_fixtures.NodeThread,
    module_etcd: etcd_process.EtcdServer,
    tmp_path: pathlib.Path,
) -> None:
    iris = samples.train_iris_logistic(tmp_path / "iris")
    wine = samples.train_wine_forest(tmp_path / "wine")
    with mesh_node.client() as mesh:
        mesh.apply(mesh_fixtures.predictor_spec("before", iris.folder))
        np.testing.assert_array_equal(
            mesh_fixtures.infer(mesh_node.endpoint, "before", iris.inputs), iris.expected
        )

        module_etcd.stop()
        # The request path never waits on etcd for a model loaded here.
        np.testing.assert_array_equal(
            mesh_fixtures.infer(mesh_node.endpoint, "before", iris.inputs), iris.expected
        )
        module_etcd.start()

        # Registrations made before the restart are still there, and a new
        # one made after it reaches the node's mirror through the resumed watch.
        mesh.apply(mesh_fixtures.predictor_spec("after", wine.folder))
        np.testing.assert_array_equal(
            mesh_fixtures.infer(mesh_node.endpoint, "after", wine.inputs), wine.expected
        )
        names = {v.vmodel_id for v in mesh.vmodels()}
        assert {"before", "after"} <= names
        deadline = time.monotonic() + 20
        while True:  # the node's instance record is republished under a live lease
            instances = mesh.instances()
            if instances and instances[0].model_count == 2:
                break
            assert time.monotonic() < deadline, instances
            time.sleep(0.2)
    table = mesh_node.node.table
    assert table.vmodel("after") is not None and table.vmodel("before") is not None
