"""A user's view: Predictors with ``spec.storage.key`` naming S3, GCS, Azure
Blob, HTTP and PVC storage are served by a real node (etcd, MLServer, gRPC)
whose puller reads a storage-config folder; a wrong secret ends the load with
LOADING_FAILED and a clear message without the secret, and the node goes on
serving."""

from __future__ import annotations

import contextlib
import itertools
import logging
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tritonclient import http as triton_http
from tritonclient.utils import InferenceServerException

from kube import mesh_client, predictor
from mesh.edges import etcd_process
from mesh.edges.proto import model_mesh_pb2 as pb2
from meshserve import client, samples
from router import rest
from tests.integration import mesh_fixtures
from tests.integration import storage_fixtures as sf
from tests.kube import test_inference_service as isvc_examples

_names = itertools.count(1)
WRONG_SECRET = "WrongSecret-Zq8Xv2Lm5Np7Rt1Wy4Ku6Hj9Df3Gb0Sa"


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("storage-config")


@pytest.fixture(scope="module")
def node(
    module_etcd: etcd_process.EtcdServer,
    tmp_path_factory: pytest.TempPathFactory,
    config_dir: pathlib.Path,
) -> Iterator[mesh_fixtures.NodeThread]:
    with sf.storage_node(module_etcd.endpoint, tmp_path_factory.mktemp("node"), config_dir) as n:
        yield n


@pytest.fixture
def mesh(node: mesh_fixtures.NodeThread) -> Iterator[mesh_client.MeshClient]:
    with node.client() as c:
        yield c


def storage_predictor(name: str, key: str, path: str, **parameters: str) -> predictor.PredictorSpec:
    """A Predictor as a user writes it for object storage."""
    storage: dict[str, Any] = {"key": key, "path": path}
    if parameters:
        storage["parameters"] = parameters
    return predictor.parse(
        {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "Predictor",
            "metadata": {"name": name},
            "spec": {"modelType": {"name": "sklearn"}, "storage": storage},
        }
    )


def serve_through_node(
    node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    spec: predictor.PredictorSpec,
    sample: samples.Sample,
) -> None:
    mesh.apply(spec)
    got = mesh_fixtures.infer(node.endpoint, spec.name, sample.inputs)
    np.testing.assert_array_equal(got, sample.expected)
    status = client.predictor_status(mesh.vmodel_status(spec.name))
    assert status.available and status.active_model_state == "Loaded"


def test_a_predictor_with_an_s3_storage_key_is_served(
    node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    s3_server: sf.S3Server,
    config_dir: pathlib.Path,
    iris_sample: samples.Sample,
) -> None:
    sf.write_config(config_dir, "localMinIO", s3_server.config())
    s3_server.upload_folder(iris_sample.folder, "mesh/iris")
    serve_through_node(
        node, mesh, storage_predictor(f"s3-{next(_names)}", "localMinIO", "mesh/iris"), iris_sample
    )


def test_a_predictor_with_a_gcs_storage_key_is_served(
    node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    gcs_server: sf.GCSServer,
    config_dir: pathlib.Path,
    wine_sample: samples.Sample,
) -> None:
    sf.write_config(config_dir, "gcs", gcs_server.config(bucket="elsewhere"))
    gcs_server.upload_folder(wine_sample.folder, "mesh/wine")
    spec = storage_predictor(f"gcs-{next(_names)}", "gcs", "mesh/wine", bucket=sf.BUCKET)
    serve_through_node(node, mesh, spec, wine_sample)


def test_a_predictor_with_an_azure_storage_key_is_served(
    node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    azurite_server: sf.AzuriteServer,
    config_dir: pathlib.Path,
    diabetes_sample: samples.Sample,
) -> None:
    sf.write_config(config_dir, "azure", azurite_server.config())
    azurite_server.upload_folder(diabetes_sample.folder, "mesh/diabetes")
    spec = storage_predictor(f"az-{next(_names)}", "azure", "mesh/diabetes")
    mesh.apply(spec)
    got = mesh_fixtures.infer(node.endpoint, spec.name, diabetes_sample.inputs)
    np.testing.assert_allclose(got, diabetes_sample.expected.astype(np.float64))


def test_a_predictor_with_an_http_storage_key_and_a_tar_gz_is_served(
    node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    http_server: sf.HTTPServer,
    config_dir: pathlib.Path,
    iris_sample: samples.Sample,
    tmp_path: pathlib.Path,
) -> None:
    sf.write_config(config_dir, "web", {"type": "http", "url": f"{http_server.url}/models/"})
    (http_server.root / "models").mkdir(exist_ok=True)
    http_server.put(sf.tar_gz(iris_sample.folder, tmp_path / "iris.tgz"), "models/iris.tgz")
    serve_through_node(
        node, mesh, storage_predictor(f"web-{next(_names)}", "web", "iris.tgz"), iris_sample
    )


def test_a_predictor_with_a_pvc_storage_key_is_served(
    node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    config_dir: pathlib.Path,
    wine_sample: samples.Sample,
) -> None:
    sf.write_config(config_dir, "pvc", {"type": "pvc", "name": "model-claim"})
    volume = node.config.node.models_root / "model-claim" / "wine"
    shutil.copytree(wine_sample.folder, volume, dirs_exist_ok=True)
    serve_through_node(
        node, mesh, storage_predictor(f"pvc-{next(_names)}", "pvc", "wine"), wine_sample
    )


def test_a_wrong_secret_fails_the_load_clearly_and_the_node_keeps_serving(
    node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    s3_server: sf.S3Server,
    config_dir: pathlib.Path,
    iris_sample: samples.Sample,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sf.write_config(config_dir, "wrongSecret", s3_server.config(secret_access_key=WRONG_SECRET))
    s3_server.upload_folder(iris_sample.folder, "mesh/guarded")
    bad = storage_predictor(f"guarded-{next(_names)}", "wrongSecret", "mesh/guarded")
    mesh.apply(bad)
    with pytest.raises(InferenceServerException) as info:
        mesh_fixtures.infer(node.endpoint, bad.name, iris_sample.inputs)
    message = info.value.message()
    assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert bad.model_id in message
    assert "storage key 'wrongSecret'" in message and "access denied" in message
    assert WRONG_SECRET not in message and s3_server.secret_access_key not in message
    status = mesh.vmodel_status(bad.name)
    assert status.activeModelStatus.status == pb2.ModelStatusInfo.LOADING_FAILED
    recorded = " ".join(e for e in status.activeModelStatus.errors)
    assert "access denied" in recorded and WRONG_SECRET not in recorded
    assert "access denied" in caplog.text  # the node logged the failure...
    assert WRONG_SECRET not in caplog.text  # ...without the secret
    # The node goes on serving other models.
    sf.write_config(config_dir, "good", s3_server.config())
    serve_through_node(
        node, mesh, storage_predictor(f"good-{next(_names)}", "good", "mesh/guarded"), iris_sample
    )


@pytest.mark.parametrize("example", ["OLD_FORM_S3", "NEW_FORM_S3"])
def test_modelmesh_servings_example_inference_services_are_served_unchanged_from_s3(
    example: str,
    node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    s3_server: sf.S3Server,
    config_dir: pathlib.Path,
    iris_sample: samples.Sample,
) -> None:
    """ModelMesh Serving's example InferenceServices, as they are written:
    ``storageUri: s3://modelmesh-example-models/sklearn/mnist-svm.joblib``
    and the annotation ``serving.kserve.io/secretKey: localMinIO``. The file
    at that key is a model of ours; gRPC and REST answers are its own."""
    sf.write_config(config_dir, "localMinIO", s3_server.config())
    s3 = s3_server.client()
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket="modelmesh-example-models")
    s3.upload_file(
        str(iris_sample.folder / "model.joblib"),
        "modelmesh-example-models",
        "sklearn/mnist-svm.joblib",
    )
    (spec,) = client.load_predictors(getattr(isvc_examples, example))
    assert spec.owner == "inferenceservice"
    mesh.apply(spec)
    got = mesh_fixtures.infer(node.endpoint, spec.name, iris_sample.inputs)
    np.testing.assert_array_equal(got, iris_sample.expected)
    server = rest.RestServer(node.node.plane, node.node.ready, "test", "127.0.0.1", 0, 1 << 24)
    node.run(server.start())
    try:
        with triton_http.InferenceServerClient(f"127.0.0.1:{server.port}") as c:
            inp = triton_http.InferInput("predict", list(iris_sample.inputs.shape), "FP64")
            inp.set_data_from_numpy(iris_sample.inputs)
            answer = c.infer(spec.name, [inp]).as_numpy("predict")
        np.testing.assert_array_equal(answer.reshape(-1), iris_sample.expected)
    finally:
        node.run(server.stop())
    mesh.delete(spec.name, spec.owner)
