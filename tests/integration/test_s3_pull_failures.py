"""Pulls from a real S3 server (moto) that cannot complete, on a real
``meshserve node`` process whose model folder is a small real disk.

Why it exists: the puller checks each object's MD5 against what the store
announced, refuses a model the disk cannot hold, turns a disk that fills up
mid-pull (``ENOSPC``) into a clear failure, and promises that a half-pulled
model is never left behind; until now only unit tests with stand-in stores
covered the MD5 and disk-full paths. Here the store is moto's S3 server,
with an object corrupted at rest (its bytes changed, its ETag kept: what
bit rot on a storage node looks like), and the disk is a tmpfs of 24 MiB and
32 inodes that only the node sees (:mod:`tests.integration.node_processes`).
The user's view is checked: the request's status and message, the model's
recorded failure, the model folder as the node sees it, and a node that
still loads the next model.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from collections.abc import Iterator

import boto3
import botocore.config
import numpy as np
import pytest
from moto.s3 import models as moto_s3
from tritonclient.utils import InferenceServerException

from mesh.edges import etcd_process
from mesh.edges.proto import model_mesh_pb2 as pb2
from meshserve import samples
from tests.integration import mesh_fixtures, node_processes
from tests.integration import storage_fixtures as sf

MiB = 1024 * 1024
DISK = "size=24m,nr_inodes=32"
"""The node's model folder: 24 MiB (the puller keeps 16 MiB free) and 32 inodes."""

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def small_disk_node(
    module_etcd: etcd_process.EtcdServer,
    s3_server: sf.S3Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[node_processes.NodeProcess]:
    """A node process reading storage key ``s3`` (the moto server), its
    model folder on a tmpfs of its own."""
    tmp = tmp_path_factory.mktemp("small-disk")
    config = tmp / "storage-config"
    sf.write_config(config, "s3", s3_server.config())
    node = node_processes.start_node_process(
        module_etcd.endpoint,
        f"disk{os.getpid()}",
        tmp / "data",
        {"MESHSERVE_STORAGE_CONFIG": str(config)},
        tmpfs_options=DISK,
    )
    try:
        yield node
    finally:
        node.stop()


def _corrupt_at_rest(bucket: str, key: str) -> None:
    """Change one byte of an object as moto (in this process) stores it,
    keeping the ETag (the MD5) it announces."""
    for account_id in list(moto_s3.s3_backends.keys()):
        stored = moto_s3.s3_backends[account_id]["aws"].get_object(bucket, key)
        if stored is not None:
            announced = stored.etag
            data = bytearray(stored.value)
            data[len(data) // 2] ^= 0xFF
            stored.value = bytes(data)  # type: ignore[misc]  # moto's setter is untyped
            assert stored.etag == announced
            return
    raise AssertionError(f"moto holds no object {bucket}/{key}")


def _register(node: node_processes.NodeProcess, model_id: str, path: str) -> None:
    info = pb2.ModelInfo(type="sklearn", path=path, key="s3")
    with node.client() as c:
        c.mesh.registerModel(pb2.RegisterModelRequest(modelId=model_id, modelInfo=info))


def _failed_load(node: node_processes.NodeProcess, model_id: str, sample: samples.Sample) -> str:
    """The message of the request that found the load failed (its status
    checked), followed by the failures the model's record shows."""
    with pytest.raises(InferenceServerException) as info:
        mesh_fixtures.infer(node.endpoint, model_id, sample.inputs)
    assert info.value.status() == "StatusCode.FAILED_PRECONDITION", info.value.message()
    message = str(info.value.message())
    with node.client() as c:
        # the node's mirror shows its own record a moment after the answer
        mesh_fixtures.wait_for(
            lambda: (
                c.mesh.getModelStatus(pb2.GetStatusRequest(modelId=model_id)).status
                == pb2.ModelStatusInfo.LOADING_FAILED
            ),
            30,
            "LOADING_FAILED in the model's status",
        )
        status = c.mesh.getModelStatus(pb2.GetStatusRequest(modelId=model_id))
    return "\n".join([message, *status.errors])


def _free_inodes(node: node_processes.NodeProcess) -> int:
    return os.statvfs(node.visible_model_dir).f_ffree


def _upload_rotten_iris(
    s3_server: sf.S3Server, sample: samples.Sample, prefix: str, *, with_crc: bool
) -> None:
    """Upload the iris model under ``prefix`` and corrupt it at rest.

    ``with_crc``: as boto3 uploads by default, the store keeps a CRC of the
    object and returns it with every read (AWS does so for every new
    object); without, as older clients and many S3-compatible stores do,
    only the ETag's MD5 can tell the bytes changed."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name=s3_server.region,
        aws_access_key_id=s3_server.access_key_id,
        aws_secret_access_key=s3_server.secret_access_key,
        config=botocore.config.Config(
            request_checksum_calculation="when_supported" if with_crc else "when_required"
        ),
    )
    key = f"{prefix}/model.joblib"
    client.upload_file(str(sample.model_file), s3_server.bucket, key)
    _corrupt_at_rest(s3_server.bucket, key)


def test_an_object_whose_md5_does_not_match_fails_the_load_and_leaves_nothing(
    small_disk_node: node_processes.NodeProcess,
    s3_server: sf.S3Server,
    iris_sample: samples.Sample,
) -> None:
    model_id = f"rotten-{next(_ids)}"
    prefix = f"integrity/{model_id}"
    _upload_rotten_iris(s3_server, iris_sample, prefix, with_crc=False)
    _register(small_disk_node, model_id, prefix)
    message = _failed_load(small_disk_node, model_id, iris_sample)
    assert "model.joblib': MD5 checksum mismatch" in message, message
    assert f"s3://{s3_server.bucket}/{prefix}" in message and "storage key 's3'" in message
    assert sf.nothing_loadable(small_disk_node.visible_model_dir, model_id)


def test_an_object_failing_its_stored_crc_is_a_checksum_mismatch_and_leaves_nothing(
    small_disk_node: node_processes.NodeProcess,
    s3_server: sf.S3Server,
    iris_sample: samples.Sample,
) -> None:
    model_id = f"rotten-crc-{next(_ids)}"
    prefix = f"integrity/{model_id}"
    _upload_rotten_iris(s3_server, iris_sample, prefix, with_crc=True)
    _register(small_disk_node, model_id, prefix)
    message = _failed_load(small_disk_node, model_id, iris_sample)
    assert f"s3://{s3_server.bucket}/{prefix}/model.joblib" in message, message
    assert "checksum mismatch" in message, message
    assert sf.nothing_loadable(small_disk_node.visible_model_dir, model_id)


def test_a_disk_that_fills_up_during_the_pull_fails_the_load_and_leaves_nothing(
    small_disk_node: node_processes.NodeProcess,
    s3_server: sf.S3Server,
    iris_sample: samples.Sample,
) -> None:
    node = small_disk_node
    model_id = f"many-files-{next(_ids)}"
    prefix = f"integrity/{model_id}"
    disk = os.statvfs(node.visible_model_dir)
    client = s3_server.client()
    for i in range(disk.f_files):  # more files than the disk has inodes, a few bytes each
        client.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/part-{i:03d}", Body=b"x")
    _register(node, model_id, prefix)
    message = _failed_load(node, model_id, iris_sample)
    assert "the node's disk is full" in message, message
    assert f"s3://{s3_server.bucket}/{prefix}" in message
    assert sf.nothing_loadable(node.visible_model_dir, model_id)
    mesh_fixtures.wait_for(lambda: _free_inodes(node) == disk.f_ffree, what="inodes given back")
    # The disk is usable again: the next model from S3 loads and answers.
    good = f"iris-after-full-{next(_ids)}"
    s3_server.upload_folder(iris_sample.folder, f"integrity/{good}")
    _register(node, good, f"integrity/{good}")
    got = mesh_fixtures.infer(node.endpoint, good, iris_sample.inputs)
    np.testing.assert_array_equal(got, iris_sample.expected)


def test_a_model_larger_than_the_free_disk_is_refused_before_it_is_downloaded(
    small_disk_node: node_processes.NodeProcess,
    s3_server: sf.S3Server,
    iris_sample: samples.Sample,
    tmp_path: pathlib.Path,
) -> None:
    model_id = f"too-big-{next(_ids)}"
    big = tmp_path / "model.joblib"
    big.write_bytes(os.urandom(9 * MiB))
    s3_server.upload_file(big, f"integrity/{model_id}/model.joblib")
    _register(small_disk_node, model_id, f"integrity/{model_id}")
    message = _failed_load(small_disk_node, model_id, iris_sample)
    assert "not enough disk space on the node: the model needs 9.0 MiB" in message, message
    assert sf.nothing_loadable(small_disk_node.visible_model_dir, model_id)
