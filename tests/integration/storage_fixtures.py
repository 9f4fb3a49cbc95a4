"""Real object-storage servers for the puller's tests, on 127.0.0.1.

* ``s3_server``: moto in server mode (``ThreadedMotoServer``), with IAM
  authentication switched on after set-up, so a wrong secret really is
  refused (``SignatureDoesNotMatch``), and a ``models`` bucket.
* ``azurite_server``: Microsoft's Azurite (npm, installed by ``make install``
  into ``node_modules/``), with a ``models`` container and Azurite's
  documented development account.
* ``gcs_server``: ``gcp-storage-emulator`` (PyPI), in memory, with a
  ``models`` bucket; clients use anonymous credentials.
* ``http_server``: the standard library's HTTP server serving a folder, which
  can also cut a file short half way (``/truncate/...``) or stall mid-file
  (``/stall/...``), and guards ``/private/...`` with a bearer token.

Each starts once per test session (free ports from
:func:`mesh.edges.ports.free_port`; subprocesses through
:class:`mesh.edges.processes.ChildProcess`, so they die with the test run) and is
stopped at the end. :func:`storage_node` starts a real mesh node whose
puller reads a given storage-config folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import io
import itertools
import json
import logging
import os
import pathlib
import shutil
import sys
import tarfile
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
from azure.storage import blob
from google.api_core import client_options
from google.auth import credentials as auth_credentials
from google.cloud import storage
from moto.server import ThreadedMotoServer

from mesh.edges import ports, processes
from meshserve import samples
from puller import model_puller
from runtime_adapters import mlserver
from tests.integration import mesh_fixtures

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
AZURITE = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
GCS_EMULATOR = pathlib.Path(sys.executable).parent / "gcp-storage-emulator"
BUCKET = "models"

# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def write_config(folder: pathlib.Path, key: str, config: dict[str, Any]) -> pathlib.Path:
    """Write storage-config ``key`` into ``folder`` as a mounted Secret would."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / key
    path.write_text(json.dumps(config))
    return path


def tar_gz(folder: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """A ``.tar.gz`` of ``folder``'s files at its top level."""
    with tarfile.open(out, "w:gz") as tf:
        for f in sorted(folder.iterdir()):
            tf.add(f, arcname=f.name)
    return out


def zip_of(
    folder: pathlib.Path, out: pathlib.Path, extra: dict[str, bytes] | None = None
) -> pathlib.Path:
    """A ``.zip`` of ``folder``'s files, plus ``extra`` raw entries (which
    may have hostile names)."""
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, arcname=f.name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out


def traversal_tar(folder: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """A ``.tar.gz`` with the model and an entry ``../../escaped.txt``."""
    with tarfile.open(out, "w:gz") as tf:
        for f in sorted(folder.iterdir()):
            tf.add(f, arcname=f.name)
        info = tarfile.TarInfo("../../escaped.txt")
        data = b"written outside the model folder"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return out


# -- S3 (moto) -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A running moto S3 with a ``models`` bucket and an IAM user's keys."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    bucket: str = BUCKET

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def config(self, **override: str) -> dict[str, Any]:
        """A storage-config entry in ModelMesh Serving's format."""
        return {
            "type": "s3",
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "endpoint_url": self.endpoint,
            "region": self.region,
            "default_bucket": self.bucket,
            **override,
        }

    def upload_folder(self, folder: pathlib.Path, prefix: str) -> None:
        c = self.client()
        for f in sorted(folder.iterdir()):
            c.upload_file(str(f), self.bucket, f"{prefix}/{f.name}")

    def upload_file(self, path: pathlib.Path, key: str) -> None:
        self.client().upload_file(str(path), self.bucket, key)


def _moto_auth(endpoint: str, count: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 on a free port, requests signed with real IAM keys."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = ports.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="puller")
        iam.put_user_policy(
            UserName="puller",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="puller")["AccessKey"]
        s3 = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
        s3.client().create_bucket(Bucket=BUCKET)
        _moto_auth(endpoint, "0")  # from now on every request must be signed right
        yield s3
    finally:
        with contextlib.suppress(OSError):
            _moto_auth(endpoint, "inf")
        server.stop()


# -- Azure Blob (Azurite) ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AzuriteServer:
    """A running Azurite blob service with a ``models`` container."""

    endpoint: str
    container: str = BUCKET

    def connection_string(self, key: str = AZURITE_KEY) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={self.endpoint};"
        )

    def config(self, **override: str) -> dict[str, Any]:
        return {
            "type": "azure",
            "account_name": AZURITE_ACCOUNT,
            "container": self.container,
            "connection_string": self.connection_string(),
            **override,
        }

    def container_client(self) -> blob.ContainerClient:
        return blob.ContainerClient.from_connection_string(self.connection_string(), self.container)

    def upload_folder(self, folder: pathlib.Path, prefix: str) -> None:
        c = self.container_client()
        for f in sorted(folder.iterdir()):
            c.upload_blob(f"{prefix}/{f.name}", f.read_bytes(), overwrite=True)


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite's blob service on a free port; fails (never skips) if Azurite
    is not installed."""
    if not AZURITE.is_file():
        pytest.fail(
            f"Azurite is not installed at {AZURITE}: run `make install` (it runs "
            "`npm install` for package.json) and run the tests again",
            pytrace=False,
        )
    port = ports.free_port()
    data = tmp_path_factory.mktemp("azurite")
    child = processes.ChildProcess(
        "azurite",
        [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(data),
            "--silent",
            "--skipApiVersionCheck",
        ],
        data / "azurite.log",
    )
    child.start()
    try:
        child.wait_for_port("127.0.0.1", port, 30)
        server = AzuriteServer(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
        server.container_client().create_container()
        yield server
    finally:
        # Azurite waits for idle keep-alive connections before it exits on
        # SIGTERM (10 s); its data is throw-away, so it gets 1 s.
        child.stop(timeout=1)


# -- GCS (gcp-storage-emulator) --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GCSServer:
    """A running GCS emulator with a ``models`` bucket."""

    endpoint: str
    bucket: str = BUCKET

    def client(self) -> Any:
        return storage.Client(
            project="test",
            credentials=auth_credentials.AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=client_options.ClientOptions(api_endpoint=self.endpoint),
        )

    def config(self, **override: str) -> dict[str, Any]:
        return {"type": "gcs", "bucket": self.bucket, "endpoint_url": self.endpoint, **override}

    def upload_folder(self, folder: pathlib.Path, prefix: str) -> None:
        bucket = self.client().bucket(self.bucket)
        for f in sorted(folder.iterdir()):
            bucket.blob(f"{prefix}/{f.name}").upload_from_filename(str(f))


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    """gcp-storage-emulator on a free port, in memory."""
    port = ports.free_port()
    logs = tmp_path_factory.mktemp("gcs")
    child = processes.ChildProcess(
        "gcp-storage-emulator",
        [str(GCS_EMULATOR), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        logs / "gcs.log",
    )
    child.start()
    try:
        child.wait_for_port("127.0.0.1", port, 30)
        server = GCSServer(f"http://127.0.0.1:{port}")
        server.client().create_bucket(BUCKET)
        yield server
    finally:
        child.stop()


# -- HTTP ------------------------------------------------------------------------------


@dataclasses.dataclass
class HTTPServer:
    """A folder served over HTTP on 127.0.0.1.

    ``/truncate/<file>`` announces the whole file but sends half and closes;
    ``/stall/<file>`` sends half, then waits for :attr:`release`;
    ``/private/<file>`` needs ``Authorization: Bearer <token>``.
    """

    url: str
    root: pathlib.Path
    token: str
    release: threading.Event = dataclasses.field(default_factory=threading.Event)
    halfway: threading.Event = dataclasses.field(default_factory=threading.Event)

    def put(self, path: pathlib.Path, name: str) -> str:
        """Serve ``path`` as ``name``; returns ``name``."""
        shutil.copyfile(path, self.root / name)
        return name


def _handler(server_state: dict[str, HTTPServer]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            state = server_state["server"]
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            mode = parts[0] if parts[0] in ("truncate", "stall", "private") else ""
            name = "/".join(parts[1:] if mode else parts)
            if mode == "private" and self.headers.get("Authorization") != f"Bearer {state.token}":
                self.send_error(401)
                return
            path = state.root / name
            if not name or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if mode in ("truncate", "stall"):
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                if mode == "stall":
                    state.halfway.set()
                    state.release.wait(30)
                self.close_connection = True
                return
            self.wfile.write(data)

    return Handler


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    """The standard library's threaded HTTP server serving a temporary folder."""
    root = tmp_path_factory.mktemp("http-root")
    state: dict[str, HTTPServer] = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    state["server"] = HTTPServer(f"http://127.0.0.1:{port}", root, token="t0ken-for-tests-only")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["server"]
    finally:
        state["server"].release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# -- a node with a storage-config folder -------------------------------------------------


@contextlib.contextmanager
def storage_node(
    etcd_endpoint: str, data_dir: pathlib.Path, config_dir: pathlib.Path
) -> Iterator[mesh_fixtures.NodeThread]:
    """A real node (etcd, MLServer, gRPC) whose puller reads ``config_dir``
    as its storage-config folder."""
    cfg = mesh_fixtures.node_settings(etcd_endpoint, data_dir)
    cfg = dataclasses.replace(
        cfg, node=dataclasses.replace(cfg.node, storage_config_dir=config_dir)
    )
    node = mesh_fixtures.NodeThread(cfg)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def wait_for(predicate: Any, timeout: float = 30) -> None:
    mesh_fixtures.wait_for(predicate, timeout)


# -- pulling into the shared MLServer ----------------------------------------------------

_ids = itertools.count(1)


def model_id(prefix: str) -> str:
    """A model id no other test of the session uses."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


def runtime_puller(
    runtime: mlserver.MLServerAdapter, config_dir: pathlib.Path, models_root: pathlib.Path
) -> model_puller.StoragePuller:
    """A puller writing into the shared MLServer's repository (never swept:
    other tests' models live there too)."""
    return model_puller.StoragePuller(
        model_puller.PullerSettings(
            model_dir=runtime.config.model_dir,
            models_root=models_root,
            storage_config_dir=config_dir,
        )
    )


async def assert_serves(
    runtime: mlserver.MLServerAdapter, folder: pathlib.Path, sample: samples.Sample
) -> None:
    """Load the pulled ``folder`` into MLServer and check its answers against
    scikit-learn's; unload it after."""
    name = folder.name
    await runtime.load(name, sample.model_type, folder)
    try:
        got = mesh_fixtures.infer(runtime.grpc_target, name, sample.inputs)
        np.testing.assert_array_equal(got, sample.expected)
    finally:
        await runtime.unload(name)


def nothing_loadable(model_dir: pathlib.Path, name: str) -> bool:
    """No folder for ``name`` and no staging leftovers in ``model_dir``."""
    return not (model_dir / name).exists() and not any(
        p.name.startswith(f"{model_puller.STAGING_PREFIX}{name}-") for p in model_dir.iterdir()
    )
