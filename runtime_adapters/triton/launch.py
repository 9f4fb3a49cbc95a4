"""Starting ``tritonserver``: where an installed Triton's parts are, its
command line and environment, and what its log says when a load fails.

Locally Triton is the real Triton 2.51 binary shipped inside the
``nvidia-pytriton`` wheel, which ``make runtimes`` copies into
``.runtimes/triton``; it needs the wheel's shared libraries and the venv's
Python (for the Python-backend stub) found first, and none of the starting
process's Python settings. On Kubernetes Triton is NVIDIA's image, reached at
an endpoint, whose process the node may see in a shared process namespace.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence

from mesh.core import errors
from runtime_adapters import memory


@dataclasses.dataclass(frozen=True)
class Install:
    """Where the parts of an installed Triton are (``make runtimes``)."""

    binary: pathlib.Path
    """``tritonserver``."""
    backends: pathlib.Path
    """``--backend-directory`` (``python/`` with its stub inside)."""
    libraries: pathlib.Path
    """The shared libraries the binary needs (``nvidia_pytriton.libs``)."""
    bin_dir: pathlib.Path
    """The venv's ``bin``: first on ``PATH``, so the Python-backend stub finds
    the venv's Python and its numpy."""


def server_args(
    install: Install,
    model_dir: pathlib.Path,
    host: str,
    grpc_port: int,
    http_port: int | None,
    exit_timeout_seconds: float,
    gpu_count: int = 0,
    extra: Sequence[str] = (),
) -> list[str]:
    """``tritonserver``'s command line: explicit model control over our
    repository, every endpoint on ``host`` (Triton binds 0.0.0.0 unless
    told), no pinned or CUDA memory pools (memory models do not use; one
    ``--cuda-memory-pool-byte-size`` per GPU of ``gpu_count``), no
    metrics server (the mesh exports its own), HTTP only with a port, and
    ``--strict-readiness=false``: with it on, one model that failed to load
    makes ServerReady false for the whole server."""
    args = [
        str(install.binary),
        f"--model-repository={model_dir}",
        "--model-control-mode=explicit",
        f"--backend-directory={install.backends}",
        f"--grpc-address={host}",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=false",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        *(f"--cuda-memory-pool-byte-size={gpu}:0" for gpu in range(max(1, gpu_count))),
        "--strict-readiness=false",
        f"--exit-timeout-secs={max(1, round(exit_timeout_seconds))}",
    ]
    if http_port is None:
        args.append("--allow-http=false")
    else:
        args += [f"--http-address={host}", f"--http-port={http_port}"]
    return args + list(extra)


def server_env(base: Mapping[str, str], install: Install) -> dict[str, str]:
    """The environment ``tritonserver`` runs in: ``base`` with the wheel's
    libraries on ``LD_LIBRARY_PATH`` and the Triton venv first on ``PATH``,
    and without the Python settings of the process that starts it (the
    stub must import the venv's numpy < 2, not the mesh's)."""
    env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    libs = env.get("LD_LIBRARY_PATH", "")
    env["LD_LIBRARY_PATH"] = str(install.libraries) + (f":{libs}" if libs else "")
    env["PATH"] = str(install.bin_dir) + os.pathsep + env.get("PATH", os.defpath)
    env["VIRTUAL_ENV"] = str(install.bin_dir.parent)
    return env


def find_install(venv: pathlib.Path) -> Install:
    """The Triton that ``make runtimes`` set up in ``venv``; raises
    :class:`mesh.core.errors.RuntimeUnavailable` saying how to install it."""
    home = venv.absolute()
    binary = home / "tritonserver" / "bin" / "tritonserver"
    backends = home / "tritonserver" / "backends"
    libraries = sorted(home.glob("lib/python3*/site-packages/nvidia_pytriton.libs"))
    stub = backends / "python" / "triton_python_backend_stub"
    missing = [p for p in (binary, stub) if not p.is_file()]
    if missing or not libraries:
        what = ", ".join(str(p) for p in missing) or f"{home}/lib/*/nvidia_pytriton.libs"
        raise errors.RuntimeUnavailable(
            f"Triton is not installed: {what} is missing (run `make install`)"
        )
    return Install(binary, backends, libraries[-1], home / "bin")


def triton_log_errors(model_id: str, lines: Iterable[str]) -> list[str]:
    """The messages of Triton's error lines (``E1125 10:05:11 ... file.cc:12]
    "..."``) that name ``model_id`` in quotes: the reason a load failed where
    the gRPC answer only says "failed to poll from model repository"."""
    found: list[str] = []
    needle = f"'{model_id}'"
    for line in lines:
        if not line.startswith("E") or needle not in line:
            continue
        _head, sep, message = line.partition("] ")
        text = message.strip() if sep else line.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1]
        found.append(text.replace("\\n", "\n").replace('\\"', '"'))
    return found


def gpu_count() -> int:
    """How many GPUs NVML sees (0 without NVML or a GPU)."""
    snapshot = memory.gpu_snapshot()
    return len(snapshot.devices) if snapshot else 0


_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def local_listener(endpoint: str) -> int | None:
    """The visible process listening on a local endpoint's port (a Triton
    container in the same pod with a shared process namespace)."""
    host, _, port = endpoint.rpartition(":")
    if host not in _LOCAL_HOSTS or not port.isdigit():
        return None
    return memory.process_listening_on(int(port))
