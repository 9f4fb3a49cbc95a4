"""What the scenario :mod:`load_tests.cold_path` runs against: an S3 server
holding the models, an etcd, one mesh node with its MLServer, and the
client's handles on them (the :class:`Bench`), started together and stopped
together.

Why it exists: the scenario times two ways of doing one cold start against
the *same* runtime and the *same* object in the same store; the servers that
make that true (and the second, big model that makes the pull weigh) are a
set-up of their own, apart from the timing of the runs and the arithmetic on
them.

One run starts, under a temporary folder:

* a real S3-protocol server, moto's ``moto_server``, as its own process
  (credentials are accepted as given), with a ``models`` bucket holding each
  model's folder (``cold/<model>/model.joblib``);
* an etcd (``mesh.edges.etcd_process``);
* one mesh node as its own process (``load_tests.local_node``, as
  ``meshserve up`` starts one), which starts its own MLServer; its puller
  reads a storage-config folder with one ``s3`` entry for that bucket
  (``MESHSERVE_STORAGE_CONFIG``), its Prometheus metrics are on (a free
  port) and it logs at INFO as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import pathlib
import re
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import boto3
import botocore.config
import grpc
import joblib
import numpy as np
import psutil
from sklearn import neighbors
from tritonclient.grpc import service_pb2_grpc

from kube import predictor
from load_tests import loadgen, local_node
from mesh.edges import etcd_process, ports, processes
from meshserve import samples

PREFIX = "cold-bench"
BUCKET = "models"
STORAGE_KEY = "bench-s3"
REGION = "us-east-1"
ACCESS_KEY = "cold-bench-key"
SECRET_KEY = "cold-bench-secret"  # moto accepts any credentials
MOTO_SERVER = pathlib.Path(sys.executable).parent / "moto_server"
_LOADED_LINE = re.compile(r"^loaded (\S+) \(\S+\) in ([0-9.]+) s:")


def train_knn(folder: pathlib.Path, megabytes: float) -> samples.Sample:
    """A k-nearest-neighbours classifier (a k-d tree over random 4-feature
    points) whose ``model.joblib`` is about ``megabytes`` MB: the points, and
    the tree's own copy and index, ~84 bytes a point.

    A k-d tree, not brute force: a brute-force KNN predicts through
    scikit-learn's OpenMP kernels, which on a busy 2-core machine took 3 ms or
    60-90 ms by turns (threads spinning against other processes), on either
    side, and drowned the cold path in that noise; a k-d tree query is one
    thread and under a millisecond."""
    features = 4
    rows = max(64, int(megabytes * 1e6 / 84))
    rng = np.random.default_rng(samples.SEED)
    x = rng.normal(size=(rows, features))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = neighbors.KNeighborsClassifier(n_neighbors=5, algorithm="kd_tree").fit(x, y)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    inputs = np.ascontiguousarray(rng.normal(size=(samples.BATCH_ROWS, features)))
    return samples.Sample(
        folder=folder,
        model_type="sklearn",
        inputs=inputs,
        expected=np.asarray(model.predict(inputs)),
    )


class S3Process:
    """moto's S3 server as its own process, with a ``models`` bucket."""

    def __init__(self, work: pathlib.Path) -> None:
        self.port = ports.free_port()
        self.process = processes.ChildProcess(
            "moto S3",
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
            work / "logs" / "moto.log",
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process.start()
        self.process.wait_for_port("127.0.0.1", self.port, 60)
        self.client().create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        self.process.stop()

    def client(self) -> Any:
        """A plain boto3 S3 client, as a user makes one."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )

    def storage_config(self) -> dict[str, str]:
        """The node's storage-config entry, in ModelMesh Serving's format."""
        return {
            "type": "s3",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "endpoint_url": self.endpoint,
            "region": REGION,
            "default_bucket": BUCKET,
        }


def upload(s3: Any, folder: pathlib.Path, prefix: str) -> None:
    for f in sorted(folder.iterdir()):
        s3.upload_file(str(f), BUCKET, f"{prefix}/{f.name}")


def s3_predictor(name: str, path: str) -> predictor.PredictorSpec:
    """A Predictor as a user writes it for a model in S3."""
    return predictor.parse(
        {
            "apiVersion": predictor.API_VERSION,
            "kind": predictor.KIND,
            "metadata": {"name": name},
            "spec": {
                "modelType": {"name": "sklearn"},
                "storage": {"key": STORAGE_KEY, "path": path},
            },
        }
    )


class NodeLog:
    """The node's JSON log, read from where the last read stopped."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.offset = 0

    def skip(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def repository_load_ms(self, model_id: str) -> float:
        """The adapter's ``RepositoryModelLoad`` time of ``model_id`` (ms),
        from the lines written since the last read."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        for line in chunk.decode(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                message = str(json.loads(line).get("message", ""))
            except ValueError:
                continue
            m = _LOADED_LINE.match(message)
            if m and m.group(1) == model_id:
                return float(m.group(2)) * 1000
        raise RuntimeError(f"the node's log has no 'loaded {model_id}' line ({self.path})")


@dataclasses.dataclass
class Bench:
    """What both sides use."""

    node: local_node.NodeProcess
    metrics_port: int
    log: NodeLog
    s3: Any
    mesh: loadgen.Target
    runtime: loadgen.Target
    repository: Any
    """A V2 stub on MLServer, for RepositoryModelLoad/Unload and RepositoryIndex."""

    @property
    def model_dir(self) -> pathlib.Path:
        return self.node.data_dir / "models"


ONE_MODEL_ENV = {
    "MESHSERVE_CAPACITY": "1Gi",
    "MESHSERVE_MIN_MODEL_SIZE": "600Mi",
    "MESHSERVE_CHURN_THRESHOLD": "0",
}
"""Room for one model in the node's memory, evicted at once when another
comes (the cold runs hold one model at a time, so they are unaffected; the
disk-reload step, :mod:`load_tests.cold_disk_reload`, needs it)."""


def cold_node(
    work: pathlib.Path, etcd: str, metrics_port: int, config_dir: pathlib.Path
) -> local_node.NodeProcess:
    """The mesh node: metrics on, the S3 storage config, a JSON log at INFO."""
    return local_node.NodeProcess(
        work,
        etcd,
        PREFIX,
        "cold-node",
        work / "store",
        extra_env={
            "MESHSERVE_METRICS_PORT": str(metrics_port),
            "MESHSERVE_STORAGE_CONFIG": str(config_dir),
            "MESHSERVE_LOG_LEVEL": "INFO",
            "MESHSERVE_LOG_FORMAT": "json",
            **ONE_MODEL_ENV,
        },
    )


@contextlib.asynccontextmanager
async def running(
    work: pathlib.Path, models: Mapping[str, samples.Sample], started: list[psutil.Process]
) -> AsyncIterator[Bench]:
    """The S3 server with ``models`` uploaded (``cold/<kind>``), etcd and the
    node, started; every process started is added to ``started``, and all
    are stopped on the way out."""
    config_dir = work / "storage-config"
    config_dir.mkdir(parents=True)
    s3 = S3Process(work)
    etcd = etcd_process.EtcdServer(work / "etcd", log_path=work / "logs" / "etcd.log", fast=True)
    metrics_port = ports.free_port()
    node = cold_node(work, etcd.endpoint, metrics_port, config_dir)
    try:
        s3.start()
        assert s3.process.pid is not None
        started.append(psutil.Process(s3.process.pid))
        (config_dir / STORAGE_KEY).write_text(json.dumps(s3.storage_config()))
        s3_client = s3.client()
        for kind, sample in models.items():
            upload(s3_client, sample.folder, f"cold/{kind}")
        etcd.start()
        assert etcd.pid is not None
        started.append(psutil.Process(etcd.pid))
        await node.start()
        started += node.tree()
        runtime_channel = grpc.aio.insecure_channel(node.runtime_endpoint)
        b = Bench(
            node=node,
            metrics_port=metrics_port,
            log=NodeLog(node.process.log_path),
            s3=s3_client,
            mesh=loadgen.Target(node.endpoint),
            runtime=loadgen.Target(node.runtime_endpoint),
            repository=service_pb2_grpc.GRPCInferenceServiceStub(runtime_channel),
        )
        try:
            yield b
        finally:
            await b.mesh.close()
            await b.runtime.close()
            await runtime_channel.close()
    finally:
        await asyncio.to_thread(node.stop)
        etcd.stop()
        s3.stop()
