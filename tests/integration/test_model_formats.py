"""LightGBM and ONNX models through a mesh node and its real MLServer,
answering what LightGBM and onnxruntime themselves answer: a booster saved
as ``model.bst`` (text, as in ModelMesh Serving's examples) applied as an
InferenceService with ``meshserve predictor apply -f``, the same booster as
a bare ``.txt`` file, and a bare ``model.onnx`` served by meshserve's
onnxruntime class in MLServer."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from tritonclient import grpc as triton
from tritonclient.utils import InferenceServerException

from meshserve import samples
from tests.integration import mesh_fixtures

pytestmark = pytest.mark.integration

INFERENCE_SERVICE = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: lightgbm
      storage:
        path: {path}
"""


def test_an_inference_service_applied_with_the_cli_serves_a_lightgbm_bst(
    mesh_node: mesh_fixtures.NodeThread, tmp_path: pathlib.Path, lightgbm_sample: samples.Sample
) -> None:
    f = tmp_path / "isvc.yaml"
    f.write_text(INFERENCE_SERVICE.format(name="lgb-bst", path=lightgbm_sample.folder))
    done = subprocess.run(
        [sys.executable, "-m", "meshserve.cli", "predictor", "apply", "-f", str(f)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MESHSERVE_ENDPOINT": mesh_node.endpoint},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "inferenceservice/lgb-bst configured" in done.stdout

    got = mesh_fixtures.infer(mesh_node.endpoint, "lgb-bst", lightgbm_sample.inputs)
    np.testing.assert_allclose(got, lightgbm_sample.expected.astype(np.float64).ravel(), rtol=1e-6)


def test_a_lightgbm_booster_in_a_bare_txt_file_is_served(
    mesh_node: mesh_fixtures.NodeThread, tmp_path: pathlib.Path, lightgbm_sample: samples.Sample
) -> None:
    booster = tmp_path / "booster.txt"  # LightGBM's own name for its text format
    shutil.copy(lightgbm_sample.folder / "model.bst", booster)
    with mesh_node.client() as c:
        c.apply(mesh_fixtures.predictor_spec("lgb-txt", booster, "lightgbm"))

    got = mesh_fixtures.infer(mesh_node.endpoint, "lgb-txt", lightgbm_sample.inputs)
    np.testing.assert_allclose(got, lightgbm_sample.expected.astype(np.float64).ravel(), rtol=1e-6)


def test_a_bare_onnx_file_is_served_by_its_own_names_and_datatypes(
    mesh_node: mesh_fixtures.NodeThread, onnx_sample: samples.Sample
) -> None:
    with mesh_node.client() as c:
        c.apply(mesh_fixtures.predictor_spec("onnx-file", onnx_sample.model_file, "onnx"))
    x = onnx_sample.inputs.astype(np.float32)
    with triton.InferenceServerClient(mesh_node.endpoint) as c:
        inp = triton.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = c.infer("onnx-file", [inp], client_timeout=60)
        scores, label = result.as_numpy("scores"), result.as_numpy("label")
        np.testing.assert_allclose(scores, onnx_sample.expected.astype(np.float32), rtol=1e-6)
        np.testing.assert_array_equal(label, onnx_sample.expected.argmax(axis=1))
        meta = c.get_model_metadata("onnx-file")
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            ("x", "FP32", [-1, 4])
        ]
        assert [(t.name, t.datatype) for t in meta.outputs] == [
            ("scores", "FP32"),
            ("label", "INT64"),
        ]

        wrong = triton.InferInput("x", list(x.shape), "FP64")
        wrong.set_data_from_numpy(x.astype(np.float64))
        with pytest.raises(InferenceServerException, match="is FP32, not FP64") as caught:
            c.infer("onnx-file", [wrong], client_timeout=60)
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_the_node_says_its_mlserver_serves_lightgbm_and_onnx(
    mesh_node: mesh_fixtures.NodeThread,
) -> None:
    with mesh_node.client() as c:
        (me,) = [i for i in c.instances() if i.instance_id == mesh_node.config.node.instance_id]
    assert {"mt:lightgbm", "mt:onnx", "mt:sklearn", "mt:xgboost"} <= set(me.labels)
