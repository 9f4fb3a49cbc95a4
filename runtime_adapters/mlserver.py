"""MLServer as a mesh runtime: start it, load and unload models, size them.

A mesh node serves models through an unmodified MLServer process next to it.
This module is the only place that knows how MLServer wants to be driven:
its ``settings.json`` and per-model ``model-settings.json`` files (which
implementation class serves which model type, and from which file, is
:mod:`runtime_adapters.mlserver_formats`' table), and its V2 model-repository
calls (``RepositoryModelLoad`` / ``RepositoryModelUnload``, which MLServer
answers over gRPC although its ServerMetadata lists no extensions).

MLServer is never imported here: ``import mlserver`` and ``tritonclient.grpc``
register the same proto symbols and cannot share a process. MLServer runs as a
child process from its own virtual environment (``mlserver start DIR``), and we
speak to it with the V2 protos that ``tritonclient`` ships.

The deciding parts (what ``model-settings.json`` says, what size to report)
are pure functions at the top of the module, tested without a server;
:class:`MLServerAdapter` wraps them with the process and gRPC I/O, the part
it shares with Triton's adapter coming from
:class:`runtime_adapters.v2_runtime.V2RuntimeAdapter`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import pathlib
import posixpath
import re
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psutil

from mesh.core import errors, eviction
from mesh.edges import ports, processes
from runtime_adapters import memory, mlserver_formats, v2_runtime

log = logging.getLogger(__name__)

_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = ()
"""Options of the channel to MLServer (the defaults)."""

TREE_REFRESH_SECONDS = 30.0
"""How long the process tree found for a load is reused (see ``_process_tree``)."""

MODEL_SETTINGS_FILE = mlserver_formats.MODEL_SETTINGS_FILE
"""The file MLServer reads in each model folder."""

SERVER_SETTINGS_FILE = "settings.json"
"""The file MLServer reads at the root of its model repository."""

WORK_DIR_NAME = ".mlserver"
"""Folder under ``model_dir`` for the runtime's own files (log, working
directory). Hidden, so MLServer's search for ``model-settings.json`` skips it."""


# --------------------------------------------------------------------------
# Pure parts


def is_runtime_file(relative: str) -> bool:
    """Whether a path in a model folder is the runtime's or a marker, not the
    model: ``model-settings.json`` at the top, and hidden files or folders."""
    return mlserver_formats.is_runtime_file(relative)


def resolve_uri(model_id: str, model_path: pathlib.Path, uri: str, files: Iterable[str]) -> str:
    """The absolute path a user's ``parameters.uri`` names inside
    ``model_path``. Relative uris are taken from the model folder (where
    ``model-settings.json`` lies). A uri that leaves the folder, names another
    scheme than ``file``, or names nothing in ``files`` is refused: the mesh
    pulled this folder and serves only what is in it."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise errors.ModelLoadFailed(
            model_id,
            f"{MODEL_SETTINGS_FILE} parameters.uri {uri!r} is not a file in the model "
            "folder (the mesh pulls model files itself: give a path relative to the folder)",
        )
    folder = posixpath.normpath(model_path.as_posix())
    raw = parsed.path if parsed.scheme == "file" else uri
    path = posixpath.normpath(posixpath.join(folder, raw))
    if path != folder and not path.startswith(folder + "/"):
        raise errors.ModelLoadFailed(
            model_id,
            f"{MODEL_SETTINGS_FILE} parameters.uri {uri!r} points outside the model folder",
        )
    relative = posixpath.relpath(path, folder)
    listed = list(files)
    exists = relative == "." or any(f == relative or f.startswith(relative + "/") for f in listed)
    if not exists:
        found = v2_runtime.some_names(sorted(f for f in listed if not is_runtime_file(f)))
        raise errors.ModelLoadFailed(
            model_id,
            f"{MODEL_SETTINGS_FILE} parameters.uri {uri!r} names nothing in the model folder "
            f"(found: {found})",
        )
    return path


def build_model_settings(
    model_id: str,
    model_type: str,
    model_path: pathlib.Path,
    files: Iterable[str],
    user_settings: Mapping[str, Any] | None = None,
    served: Sequence[str] = mlserver_formats.ALL_MODEL_TYPES,
) -> dict[str, Any]:
    """The ``model-settings.json`` that makes MLServer serve the model in
    ``model_path`` under the name ``model_id``.

    ``files`` lists the folder (relative paths). ``user_settings`` is the
    ``model-settings.json`` the folder came with, if any: its implementation,
    parameters and other fields are kept, its ``name`` is replaced by the model
    id (the router sends requests under that name) and its ``uri`` resolved to
    an absolute path inside the folder. Raises
    :class:`mesh.core.errors.ModelLoadFailed` for a type this runtime does not
    serve (``served``) or a folder with no clear model file.
    """
    implementation = mlserver_formats.implementation_for(
        mlserver_formats.format_for(model_id, model_type, served), served
    )
    listed = list(files)
    settings: dict[str, Any] = dict(user_settings or {})
    settings["name"] = model_id
    if not settings.get("implementation"):
        settings["implementation"] = implementation
    parameters = settings.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise errors.ModelLoadFailed(
            model_id, f"{MODEL_SETTINGS_FILE}: parameters must be an object"
        )
    parameters = dict(parameters)
    user_uri = parameters.get("uri")
    if user_uri:
        parameters["uri"] = resolve_uri(model_id, model_path, str(user_uri), listed)
    else:
        chosen = mlserver_formats.choose_model_file(model_id, model_type, listed)
        parameters["uri"] = posixpath.join(model_path.as_posix(), chosen)
    settings["parameters"] = parameters
    return settings


REPOSITORY_CLASS = "meshserve_repository.FolderPerModelRepository"
"""MLServer's model repository class in an MLServer the node starts (its
module is in :data:`runtime_adapters.mlserver_formats.BUNDLED_RUNTIMES_DIR`)."""


def server_settings(
    host: str, http_port: int, grpc_port: int, metrics_port: int, max_message_bytes: int
) -> dict[str, Any]:
    """MLServer's ``settings.json``: models load only when asked, inference in
    the server process (``parallel_workers: 0``: workers crash-loop with some
    uvloop versions, and add a process hop), no access log and no metrics
    server (both cost time on every request; the mesh exports its own
    metrics)."""
    return {
        "host": host,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "metrics_endpoint": None,
        "load_models_at_startup": False,
        "parallel_workers": 0,
        "debug": False,
        "grpc_max_message_length": max_message_bytes,
        # Finds a model by reading its own folder, not by parsing every
        # model's settings on each load (meshserve_repository's docstring).
        "model_repository_implementation": REPOSITORY_CLASS,
    }


# --------------------------------------------------------------------------
# I/O helpers


def _write_json_atomically(path: pathlib.Path, data: Mapping[str, Any]) -> None:
    # MLServer may be reading every model-settings.json for another load.
    v2_runtime.write_atomically(path, json.dumps(data, indent=2) + "\n")


def prepare_model_folder(
    model_id: str,
    model_type: str,
    model_path: pathlib.Path,
    served: Sequence[str] = mlserver_formats.ALL_MODEL_TYPES,
) -> tuple[dict[str, Any], int]:
    """Write the folder's ``model-settings.json`` for an MLServer that serves
    the types ``served`` (unless it says that already); return it and the
    bytes of the model's files on disk."""
    mlserver_formats.format_for(model_id, model_type, served)
    if not model_path.is_dir():
        raise errors.ModelLoadFailed(model_id, f"model folder {model_path} does not exist")
    files = v2_runtime.list_folder(model_path)
    settings_path = model_path / MODEL_SETTINGS_FILE
    user: dict[str, Any] | None = None
    written = ""
    if settings_path.is_file():
        try:
            written = settings_path.read_text()
            loaded = json.loads(written)
        except (OSError, ValueError) as e:
            raise errors.ModelLoadFailed(model_id, f"{MODEL_SETTINGS_FILE} is not JSON: {e}") from e
        if not isinstance(loaded, dict):
            raise errors.ModelLoadFailed(model_id, f"{MODEL_SETTINGS_FILE} is not a JSON object")
        user = loaded
    settings = build_model_settings(
        model_id, model_type, model_path.absolute(), files, user, served
    )
    try:
        # A folder loaded before (kept by the disk tier) has this very file:
        # a rename over it costs more than the rest of this function.
        if json.dumps(settings, indent=2) + "\n" != written:
            _write_json_atomically(settings_path, settings)
    except OSError as e:
        raise errors.ModelLoadFailed(model_id, f"cannot write {settings_path}: {e}") from e
    return settings, v2_runtime.folder_bytes(model_path, files, MODEL_SETTINGS_FILE)


# --------------------------------------------------------------------------
# The adapter


@dataclasses.dataclass(frozen=True)
class MLServerConfig:
    """How to run (or reach) one MLServer."""

    model_dir: pathlib.Path
    """The runtime's model repository: each model is a folder
    ``<model_dir>/<model_id>`` holding its files when :meth:`MLServerAdapter.load`
    is called. ``settings.json`` is written here too."""
    venv: pathlib.Path
    """MLServer's virtual environment (``.runtimes/mlserver``); its
    ``bin/mlserver`` is started."""
    endpoint: str = ""
    """``host:port`` of the gRPC endpoint of an MLServer already running, which
    must serve ``model_dir`` as its repository; empty: start our own process."""
    host: str = "127.0.0.1"
    """Address our own MLServer listens on."""
    grpc_port: int = 0
    """V2 gRPC port of our own MLServer; 0 picks a free one at start."""
    http_port: int = 0
    """V2 REST port of our own MLServer (unused by the mesh, but MLServer
    always opens it); 0 picks a free one at start."""
    metrics_port: int = 0
    """Metrics port written to ``settings.json`` (the metrics server itself is
    switched off); 0 picks a free one at start."""
    log_path: pathlib.Path | None = None
    """Where our MLServer's output goes; default
    ``<model_dir>/.mlserver/mlserver.log``."""
    start_timeout_seconds: float = 60.0
    """Longest wait for ServerReady after starting (or connecting)."""
    size_multiplier: float = 1.25
    """Predicted memory of a model: its bytes on disk * this."""
    min_model_size_bytes: int = 1024 * 1024
    """Floor of every reported model size."""
    load_timeout_seconds: float = 120.0
    """Longest a single ``RepositoryModelLoad`` may take; then the load counts
    as failed."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest gRPC message MLServer accepts (its default, 4 MiB, is below
    the mesh's)."""
    mesh_url: str = ""
    """The V2 REST URL of the node beside our own MLServer
    (``MESHSERVE_MESH_URL`` in its environment): an explainer calls its
    predictor through it. Empty: the explainer's default."""


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.*)$")


def exception_line(details: str, log_lines: Iterable[str]) -> str:
    """The last traceback line of ``log_lines`` (``KeyError: 29``) whose
    message is ``details``, or ``""``."""
    wanted = details.strip()
    for line in reversed(list(log_lines)):
        m = _EXCEPTION_LINE.match(line.strip())
        if m and m.group(2).strip() == wanted:
            return f"{m.group(1)}: {wanted}"
    return ""


class MLServerAdapter(v2_runtime.V2RuntimeAdapter):
    """:class:`mesh.core.interfaces.RuntimeAdapter` for one MLServer process.

    Loads are serialised: MLServer (with ``parallel_workers: 0``) loads in its
    one event loop anyway, and one load at a time is what makes the memory
    growth across a load that load's own.
    """

    name = "mlserver"
    label = "MLServer"

    def __init__(self, config: MLServerConfig) -> None:
        self.config = config
        super().__init__(
            config.endpoint,
            config.host,
            config.grpc_port,
            config.log_path or config.model_dir / WORK_DIR_NAME / "mlserver.log",
            config.start_timeout_seconds,
            _CHANNEL_OPTIONS,
        )
        self._loaded_implementations: set[str] = set()
        self._tree: list[psutil.Process] = []
        self._tree_found = 0.0

    @property
    def counts_gpu_memory(self) -> bool:
        """Whether model sizes count GPU memory: never here, MLServer's
        models are sized by the RSS growth of its process tree
        (:func:`runtime_adapters.memory.tree_rss`)."""
        return False

    def supported_model_types(self) -> tuple[str, ...]:
        """Every type in :data:`runtime_adapters.mlserver_formats.FORMATS` for
        an MLServer this adapter starts (its ``PYTHONPATH`` holds meshserve's
        own runtime classes, its venv is ``make install``'s); those of
        MLServer's own runtime packages for one reached at an endpoint."""
        if self.config.endpoint:
            return mlserver_formats.IMAGE_MODEL_TYPES
        return mlserver_formats.ALL_MODEL_TYPES

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        if self.config.endpoint:
            await self._wait_ready()
            return
        if self._started():
            return
        executable = (self.config.venv / "bin" / "mlserver").absolute()
        if not executable.is_file():
            raise errors.RuntimeUnavailable(
                f"MLServer is not installed: {executable} is missing (run `make install`)"
            )
        cfg = self.config
        self._grpc_port = cfg.grpc_port or ports.free_port(cfg.host)
        settings = server_settings(
            cfg.host,
            cfg.http_port or ports.free_port(cfg.host),
            self._grpc_port,
            cfg.metrics_port or ports.free_port(cfg.host),
            cfg.max_message_bytes,
        )
        work_dir = cfg.model_dir / WORK_DIR_NAME
        work_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(cfg.model_dir / SERVER_SETTINGS_FILE, settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER_")}
        env["PYTHONUNBUFFERED"] = "1"
        if cfg.mesh_url:
            env["MESHSERVE_MESH_URL"] = cfg.mesh_url
        # meshserve's own runtime classes (meshserve_onnx...) import from here.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(mlserver_formats.BUNDLED_RUNTIMES_DIR), env.get("PYTHONPATH")) if p
        )
        child = processes.ChildProcess(
            "mlserver",
            [str(executable), "start", str(cfg.model_dir.absolute())],
            self.log_path,
            env=env,
            cwd=work_dir,
        )
        self._loaded_implementations.clear()
        self._tree = []
        took = await self._launch(child)
        log.info("MLServer pid %s ready on %s in %.2f s", child.pid, self.grpc_target, took)

    # -- models ------------------------------------------------------------

    async def _process_tree(self, pid: int) -> list[psutil.Process]:
        """MLServer's process tree, found again at most every
        :data:`TREE_REFRESH_SECONDS` (finding it scans all of ``/proc``, 1-3 ms
        a load; MLServer starts its workers at start, not per model)."""
        now = time.monotonic()
        alive = all(p.is_running() for p in self._tree)
        if not self._tree or not alive or now - self._tree_found > TREE_REFRESH_SECONDS:
            self._tree = await asyncio.to_thread(memory.process_tree, pid)
            self._tree_found = now
        return self._tree

    async def load(self, model_id: str, model_type: str, model_path: pathlib.Path) -> int:
        """Write the folder's ``model-settings.json`` and load the model.

        Returns the model's size in bytes: the larger of the prediction
        (bytes on disk * ``size_multiplier``) and the runtime's measured RSS
        growth across the load, never below ``min_model_size_bytes`` (see
        :func:`mesh.core.eviction.corrected_size` for why). The growth is measured only on a
        process we started, and not on the first load of each implementation
        class: that one mostly measures importing the library (sklearn: ~80 MB
        for a 1 KB model) which stays after the model goes.
        """
        settings, disk = await asyncio.to_thread(
            prepare_model_folder, model_id, model_type, model_path, self.supported_model_types()
        )
        implementation = str(settings["implementation"])
        predicted = eviction.predicted_size(
            disk, self.config.size_multiplier, self.config.min_model_size_bytes
        )
        async with self._v2.lock():
            pid = self.pid
            # Not measured on an implementation's first load (see above), so
            # not read either; MLServer starts no process to load a model, so
            # the tree found before the load is the tree after it.
            measuring = pid is not None and implementation in self._loaded_implementations
            tree = await self._process_tree(pid) if measuring and pid else []
            before = memory.rss_sum(tree)
            started = time.monotonic()
            await self._repository_load(model_id, model_path, self.config.load_timeout_seconds)
            elapsed = time.monotonic() - started
            after = memory.rss_sum(tree)
        measured: int | None = None
        if before is not None and after is not None:
            measured = after - before
        self._loaded_implementations.add(implementation)
        size = eviction.corrected_size(predicted, measured, self.config.min_model_size_bytes)
        log.info(
            "loaded %s (%s) in %.3f s: %d bytes on disk, predicted %d, measured %s, reported %d",
            model_id,
            model_type,
            elapsed,
            disk,
            predicted,
            measured,
            size,
        )
        return size

    async def _refusal_reason(self, model_id: str, model_path: pathlib.Path, details: str) -> str:
        """MLServer answers a failed load with ``str()`` of the exception
        (``29`` for a ``KeyError``); its log's traceback ends with the whole
        line (``KeyError: 29``), which is what a user needs."""
        lines = self._child.log_tail(200).splitlines() if self._child is not None else []
        return exception_line(details, lines) or details

    async def unload(self, model_id: str) -> None:
        async with self._v2.lock():
            await self._repository_unload(model_id, self.config.load_timeout_seconds)
