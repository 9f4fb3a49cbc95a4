"""The Ray Serve side of the scenario "peers": model multiplexing, started
in Ray's own virtual environment, counted from outside.

Why it exists: Ray Serve's model multiplexing (``@serve.multiplexed``) is the
best-known open-source answer to "many models, few replicas": a request names
its model in the ``serve_multiplexed_model_id`` header, Ray's router prefers
a replica that already holds it, and each replica keeps at most
``max_num_models_per_replica`` models in an LRU. It is meshserve's nearest
peer, so the scenario runs it on the same trace, models and room.

Ray is a benchmark-only dependency: it lives in ``.runtimes/ray`` (installed
by ``make bench``, from ``load_tests/requirements-ray.txt``), never in the
project's venv, which never imports it. This module writes
:data:`APP_SCRIPT` (the deployment) into the run's folder and starts it with
that venv's interpreter as a child process: it starts a local Ray (2 CPUs'
worth of scheduling, a small object store, no dashboard), Serve's HTTP proxy
on a free port, and ``replicas`` replicas, each loading models with
``joblib`` from the same folders as the mesh reads. Every load appends a
line to a counter file, which is how loads are counted (Ray's own metrics
need its dashboard and a Prometheus exporter). The script prints ``READY``
once the application runs, and stops Serve and Ray when its standard input
closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import subprocess
import time

import psutil

from load_tests import peers_http
from mesh.edges import ports

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RAY_VENV = REPO_ROOT / ".runtimes" / "ray"
READY_TIMEOUT_S = 240.0

APP_SCRIPT = '''"""Ray Serve model multiplexing for meshserve's scenario "peers" (written by
load_tests/peers_ray.py; run with .runtimes/ray/bin/python)."""
import os
import sys

import joblib
import numpy as np
import ray
from ray import serve

STORE, LOADS, PORT, REPLICAS, PER_REPLICA, TEMP = sys.argv[1:7]


@serve.deployment(num_replicas=int(REPLICAS), ray_actor_options={"num_cpus": 0})
class Forests:
    @serve.multiplexed(max_num_models_per_replica=int(PER_REPLICA))
    async def get_model(self, model_id):
        model = joblib.load(os.path.join(STORE, model_id, "model.joblib"))
        with open(LOADS, "a") as f:
            f.write(f"{os.getpid()} {model_id}\\n")
        return model

    async def __call__(self, request):
        model_id = serve.get_multiplexed_model_id()
        model = await self.get_model(model_id)
        t = (await request.json())["inputs"][0]
        x = np.asarray(t["data"], dtype=np.float64).reshape(t["shape"])
        y = model.predict(x)
        return {
            "model_name": model_id,
            "outputs": [
                {"name": "predict", "shape": [len(y)], "datatype": "INT64",
                 "data": [int(v) for v in y]}
            ],
        }


def main():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=128 * 1024 * 1024,
        log_to_driver=False,
        _temp_dir=TEMP,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": int(PORT)})
    serve.run(Forests.bind(), name="forests", route_prefix="/")
    print("READY", flush=True)
    sys.stdin.read()
    serve.shutdown()
    ray.shutdown()


main()
'''

ROLES = (
    ("ServeReplica", "replica"),
    ("ProxyActor", "proxy"),
    ("ServeController", "controller"),
    ("DashboardAgent", "dashboard"),
    ("RuntimeEnvAgent", "runtime env agent"),
    ("gcs_server", "gcs"),
    ("raylet/raylet", "raylet"),
    ("log_monitor", "log monitor"),
    ("autoscaler", "autoscaler monitor"),
    ("dashboard.py", "dashboard"),
    ("ray_peers_app", "driver"),
)
"""(a piece of the command line, the role), the first match wins: the
raylet's command line names the agents it starts, so it comes after them."""


def role(cmdline: str) -> str:
    """What a process of a local Ray is, from its command line."""
    for needle, name in ROLES:
        if needle in cmdline:
            return name
    return "other ray"


def available() -> str:
    """Empty if Ray's venv is installed, else why not."""
    python = RAY_VENV / "bin" / "python"
    if not python.exists():
        return f"{python} is missing: run `make bench` (or `make ray-venv`)"
    return ""


class RaySystem:
    """One Ray Serve application with ``replicas`` multiplexing replicas."""

    name = "ray"

    def __init__(self, work: pathlib.Path, store: pathlib.Path, replicas: int, per_replica: int):
        self.work = work / "ray"
        self.work.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.replicas = replicas
        self.per_replica = per_replica
        self.port = ports.free_port()
        self.loads_file = self.work / "loads.txt"
        self.loads_file.touch()
        self.log = self.work / "app.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.route = peers_http.Route(
            (f"http://127.0.0.1:{self.port}",), "/", peers_http.RAY_MODEL_HEADER
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        """Write the script, start it in Ray's venv, wait for its ``READY``."""
        script = self.work / "ray_peers_app.py"
        script.write_text(APP_SCRIPT)
        args = [str(self.store), str(self.loads_file), str(self.port)]
        args += [str(self.replicas), str(self.per_replica), str(self.work / "t")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(RAY_VENV / "bin" / "python"), str(script), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=self.work,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == b"READY":
                return
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"Ray Serve did not start; its log ends:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def loads(self) -> float:
        return float(len(self.loads_file.read_text().splitlines()))

    async def load_step_sums(self) -> dict[str, float]:
        return {}  # Ray's load is one call of the user's function

    def processes(self) -> dict[str, list[psutil.Process]]:
        """Every process of the local Ray, by role."""
        out: dict[str, list[psutil.Process]] = {}
        if self.proc is None:
            return out
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    out.setdefault(role(" ".join(p.cmdline())), []).append(p)
        return out

    async def stop(self) -> None:
        if self.proc is None:
            return
        procs = [p for ps in self.processes().values() for p in ps]
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            await asyncio.to_thread(self.proc.wait, 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        _, alive = await asyncio.to_thread(psutil.wait_procs, procs, 15)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
