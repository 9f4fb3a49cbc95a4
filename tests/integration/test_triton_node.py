"""A Triton node of the mesh sizes its models from what they really take.

Python-backend models built to hold a known amount of memory are measured
when loaded, and the node's capacity, filled by those measurements, never
lets it hold more of them than fit.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator

import numpy as np
import pytest
from tritonclient import grpc as triton

from mesh.edges import etcd_process
from tests.integration import mesh_fixtures, triton_fixtures

MiB = 1024 * 1024
BALLAST_MIB = 100


@pytest.fixture
def triton_node(
    module_etcd: etcd_process.EtcdServer,
    tmp_path_factory: pytest.TempPathFactory,
    triton_venv: pathlib.Path,
) -> Iterator[mesh_fixtures.NodeThread]:
    """A Triton node with room for two 100 MiB models but not three."""
    config = mesh_fixtures.node_settings(
        module_etcd.endpoint, tmp_path_factory.mktemp("triton-node"), capacity_bytes=330 * MiB
    )
    config = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime, kind="triton"))
    node = mesh_fixtures.NodeThread(config)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _infer(endpoint: str, name: str, sample: triton_fixtures.TritonSample) -> None:
    with triton.InferenceServerClient(endpoint) as c:
        x = sample.inputs["INPUT0"]
        inp = triton.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = c.infer(name, [inp], client_timeout=120).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(got, sample.expected["OUTPUT0"])


def test_models_are_measured_and_a_node_with_room_for_two_never_holds_three(
    triton_node: mesh_fixtures.NodeThread, tmp_path: pathlib.Path
) -> None:
    names = [f"ballast-{i}" for i in range(3)]
    with triton_node.client() as c:
        for name in names:
            sample = triton_fixtures.write_ballast_sample(tmp_path / name, BALLAST_MIB)
            c.apply(mesh_fixtures.predictor_spec(name, sample.folder, "python"))
        for round_ in range(2):
            for name in names:
                _infer(triton_node.endpoint, name, sample)
                manager = triton_node.node.manager
                assert manager.model_count() <= 2, f"round {round_}: holds {manager.model_count()}"
                assert manager.used_bytes() <= manager.capacity_bytes
        models = [m for m in c.models() if m.model_id.startswith("ballast-")]
    loaded = [m for m in models if m.status == "LOADED"]
    assert len(models) == 3 and len(loaded) == 2  # one was evicted to make room
    for m in models:
        # The array itself, plus the Python-backend stub process (~35-45 MiB);
        # a prediction from the files alone (disk x 1.25) would be ~1 MiB.
        assert BALLAST_MIB * MiB <= m.size_bytes <= (BALLAST_MIB + 60) * MiB, (
            m.model_id,
            m.size_bytes / MiB,
        )
