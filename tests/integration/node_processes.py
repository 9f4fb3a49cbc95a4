"""``meshserve node`` as a real child process, as ``meshserve up`` and a pod run it.

Why it exists: some promises are about the process itself (SIGTERM drains
it and it exits 0) or need a kernel the test cannot give an in-process node
(a model folder on a filesystem that fills up). :func:`start_node_process`
runs ``python -m meshserve.cli node`` configured only through its
environment (:func:`node_env`, the variables :mod:`meshserve.local_mesh`
sets), and returns once the node answers ``ServerReady`` and its record is
in the placement table.

With ``tmpfs_options`` the node runs in a user and mount namespace of its
own (``unshare --user --map-root-user --mount``, no root needed) whose model
folder is a fresh tmpfs mounted with those options (``size=``,
``nr_inodes=``): a real small disk that only this node (and its MLServer)
sees. :attr:`NodeProcess.visible_model_dir` reaches it from outside,
through ``/proc/<pid>/root``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pathlib
import shlex
import signal
import sys
from collections.abc import Mapping

from tritonclient import grpc as triton
from tritonclient.utils import InferenceServerException

from kube import mesh_client
from mesh.edges import ports, processes
from tests.integration import mesh_fixtures

_ids = itertools.count(1)


def node_env(
    etcd_endpoint: str,
    prefix: str,
    data_dir: pathlib.Path,
    instance_id: str,
    port: int,
    **extra: str,
) -> dict[str, str]:
    """The environment of a node process: this one's, plus a node's
    settings (REST off, metrics and probes on free ports), plus ``extra``."""
    env = dict(os.environ)
    env.pop("MESHSERVE_RUNTIME_ENDPOINT", None)
    env.update(
        {
            "KV_STORE": f"etcd:{etcd_endpoint}",
            "MM_KVSTORE_PREFIX": prefix,
            "MM_SVC_GRPC_PORT": str(port),
            "REST_PROXY_LISTEN_PORT": "-1",
            "MESHSERVE_METRICS_PORT": "0",
            "MESHSERVE_PROBE_PORT": "0",
            "MM_INSTANCE_ID": instance_id,
            "MESHSERVE_HOST": "127.0.0.1",
            "MESHSERVE_DATA_DIR": str(data_dir),
            "MESHSERVE_MODELS_ROOT": str(data_dir),
            "MESHSERVE_RUNTIME": "mlserver",
            "MESHSERVE_RUNTIMES_DIR": str(mesh_fixtures.REPO_ROOT / ".runtimes"),
            "MESHSERVE_LEASE_TTL": "3",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@dataclasses.dataclass
class NodeProcess:
    """A running ``meshserve node`` child process."""

    child: processes.ChildProcess
    instance_id: str
    endpoint: str
    data_dir: pathlib.Path

    @property
    def pid(self) -> int:
        assert self.child.pid is not None
        return self.child.pid

    @property
    def visible_model_dir(self) -> pathlib.Path:
        """The node's model folder as the node itself sees it (its own
        mount namespace, if it has one)."""
        return pathlib.Path(f"/proc/{self.pid}/root") / (self.data_dir / "models").relative_to("/")

    def client(self) -> mesh_client.MeshClient:
        return mesh_client.MeshClient(self.endpoint)

    def terminate(self) -> None:
        """SIGTERM to the node process alone (its runtime has its own group)."""
        os.kill(self.pid, signal.SIGTERM)

    def wait_exit(self, timeout: float = 60) -> int:
        """Its exit status, once it has exited."""
        mesh_fixtures.wait_for(lambda: not self.child.running(), timeout, "the node to exit")
        code = self.child.returncode()
        assert code is not None
        return code

    def stop(self) -> None:
        self.child.stop(60)

    def log(self) -> str:
        return self.child.log_tail(60)


def _answers(endpoint: str) -> bool:
    try:
        with triton.InferenceServerClient(endpoint) as c:
            return bool(c.is_server_ready(client_timeout=2))
    except InferenceServerException:
        return False


def _argv(data_dir: pathlib.Path, tmpfs_options: str | None) -> list[str]:
    node = [sys.executable, "-m", "meshserve.cli", "node"]
    if tmpfs_options is None:
        return node
    model_dir = data_dir / "models"
    script = (
        f"mkdir -p {shlex.quote(str(model_dir))} && "
        f"mount -t tmpfs -o {shlex.quote(tmpfs_options)} meshserve-test "
        f"{shlex.quote(str(model_dir))} && exec {shlex.join(node)}"
    )
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]


def start_node_process(
    etcd_endpoint: str,
    prefix: str,
    data_dir: pathlib.Path,
    extra_env: Mapping[str, str] | None = None,
    tmpfs_options: str | None = None,
    timeout: float = 90,
) -> NodeProcess:
    """Start a node and wait until it serves and the mesh lists it; on
    failure, stop it and fail with the end of its log."""
    instance_id = f"proc-{os.getpid()}-{next(_ids)}"
    port = ports.free_port()
    env = node_env(etcd_endpoint, prefix, data_dir, instance_id, port, **(extra_env or {}))
    child = processes.ChildProcess(
        f"meshserve node {instance_id}",
        _argv(data_dir, tmpfs_options),
        data_dir / "node.log",
        env=env,
    )
    child.start()
    node = NodeProcess(child, instance_id, f"127.0.0.1:{port}", data_dir)
    try:
        mesh_fixtures.wait_for(
            lambda: not child.running() or _answers(node.endpoint), timeout, "the node to serve"
        )
        assert child.running(), f"the node exited with {child.returncode()}:\n{node.log()}"
        with node.client() as c:
            mesh_fixtures.wait_for(
                lambda: instance_id in {i.instance_id for i in c.instances()},
                timeout,
                "the node's record",
            )
    except BaseException as e:
        log = node.log()
        child.stop(30)
        if isinstance(e, Exception):
            raise AssertionError(f"meshserve node did not start; its log ends:\n{log}") from e
        raise
    return node
