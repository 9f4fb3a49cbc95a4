"""Triton Inference Server as a mesh runtime: start it, lay out and load
models, unload them until they are gone, and size them by measurement.

A mesh node serves models through an unmodified ``tritonserver`` next to it.
Locally that is the real Triton 2.51 binary shipped inside the
``nvidia-pytriton`` wheel (``make runtimes`` puts it in ``.runtimes/triton``);
on Kubernetes, NVIDIA's Triton image, reached at an endpoint. This module is
the only place that knows how Triton wants to be driven:

- **Its model repository layout.** Triton serves ``<repo>/<name>/`` holding
  ``config.pbtxt`` and numbered version folders (``1/model.py``). The puller
  leaves a model's files in ``<model_dir>/<model_id>``, which is a folder of
  Triton's repository: we move the files into ``1/`` in place (unless the
  folder has version folders already) and write ``config.pbtxt``. A user's
  ``config.pbtxt`` is kept, with its ``name`` replaced by the model id
  (Triton refuses a folder whose name differs from the config's); where the
  folder has none, one is generated if the format allows it.
- **Which model types it can load** (:data:`FORMATS`). The wheel's Triton has
  the Python backend only, so locally the adapter serves ``python`` models (a
  Triton Python-backend ``model.py``). ``onnx`` (onnxruntime backend),
  ``pytorch`` (libtorch), ``tensorflow`` (SavedModel) and ``tensorrt`` need
  backends this wheel lacks: NVIDIA's image has them, and
  :attr:`TritonConfig.model_types` says which a given Triton serves.
- **Its V2 repository API over gRPC** (``RepositoryModelLoad`` /
  ``RepositoryModelUnload``, with ``--model-control-mode=explicit``). Unload
  is asynchronous in Triton: the call returns at once, the model goes on
  unloading for about a second (its Python stub process exits last), and
  ``ModelReady`` already says false meanwhile. :meth:`TritonAdapter.unload`
  waits until the repository index no longer shows it loading, ready or
  unloading, so the memory the cache counts free is free.
- **What a model costs**: the growth of the RSS of Triton's whole process
  tree across the load (the Python backend runs each model instance in a
  stub process of its own, ~40 MB each), or of its GPU memory (NVML) when the
  runtime counts GPU memory; see :mod:`runtime_adapters.memory`.

Triton answers a model it does not hold with ``NOT_FOUND`` ("Request for
unknown model: 'x' is not found" or "... has no available versions") over
gRPC; the router reads both that and an ``INTERNAL`` "unknown model" as a
model the runtime lost.

The deciding parts (the config.pbtxt rewrite, the layout plan, the command
line, the size) are pure functions at the top; :class:`TritonAdapter` wraps
them with the process, file and gRPC I/O.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2, service_pb2

from mesh.core import errors, eviction
from mesh.edges import processes
from runtime_adapters import memory, v2conn

log = logging.getLogger(__name__)

_CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 64 * 1024 * 1024),)
"""The repository index lists every model Triton has seen: allow a long answer."""

CONFIG_FILE = "config.pbtxt"
"""The file Triton reads in each model folder."""

WORK_DIR_NAME = ".triton"
"""Folder under ``model_dir`` for the runtime's own files (log, working
directory). Hidden, and never asked for: explicit model control loads only
the folders we name."""

MEMORY_POOLS = ("auto", "host", "gpu")
"""Values of :attr:`TritonConfig.memory_pool`."""

UNLOAD_POLL_SECONDS = 0.02
"""How often :meth:`TritonAdapter.unload` asks whether the model is gone."""

_MIB = 1024 * 1024
_LISTED_FILES_IN_ERRORS = 10


@dataclasses.dataclass(frozen=True)
class ModelFormat:
    """How Triton serves one model type."""

    model_type: str
    """The mesh's name for the type (a Predictor's ``modelFormat``)."""
    backend: str = ""
    """``backend:`` in config.pbtxt (empty where ``platform`` says it)."""
    platform: str = ""
    """``platform:`` in config.pbtxt (empty where ``backend`` says it)."""
    default_file: str = ""
    """Triton's default model file (or folder) name in a version folder."""
    suffixes: tuple[str, ...] = ()
    """Name endings that mark the model's file (or folder)."""
    folder_marker: str = ""
    """A file that marks a folder model at the top of the folder
    (``saved_model.pb``): the whole folder becomes ``1/<default_file>/``."""
    config_generated: bool = True
    """Whether a config.pbtxt naming only the backend is enough: Triton (or
    the model itself) completes the inputs and outputs. A TorchScript file
    does not say them, so a ``pytorch`` model must come with a config."""
    generated_extra: str = ""
    """Lines added to a generated config.pbtxt."""
    instance_overhead_bytes: int = 0
    """Host memory one instance costs beyond its files (predicted before the
    first measurement)."""
    in_wheel: bool = False
    """Whether the ``nvidia-pytriton`` build of Triton has this backend."""


FORMATS: Mapping[str, ModelFormat] = {
    f.model_type: f
    for f in (
        ModelFormat(
            "python",
            backend="python",
            default_file="model.py",
            suffixes=(".py",),
            # One CPU instance: one stub process, whatever GPUs the machine has.
            generated_extra="instance_group [ { kind: KIND_CPU, count: 1 } ]\n",
            # An idle Python-backend stub process: ~42 MB RSS (35 MB its own).
            instance_overhead_bytes=40 * _MIB,
            in_wheel=True,
        ),
        ModelFormat("onnx", backend="onnxruntime", default_file="model.onnx", suffixes=(".onnx",)),
        ModelFormat(
            "pytorch",
            backend="pytorch",
            default_file="model.pt",
            suffixes=(".pt", ".pth", ".torchscript"),
            config_generated=False,
        ),
        ModelFormat(
            "tensorflow",
            platform="tensorflow_savedmodel",
            default_file="model.savedmodel",
            suffixes=(".savedmodel",),
            folder_marker="saved_model.pb",
        ),
        ModelFormat(
            "tensorrt",
            platform="tensorrt_plan",
            default_file="model.plan",
            suffixes=(".plan", ".engine"),
        ),
    )
}
"""Model type → how Triton serves it. Only ``python`` runs on the wheel's
Triton; the others need NVIDIA's image (list them in
:attr:`TritonConfig.model_types`)."""

WHEEL_MODEL_TYPES: tuple[str, ...] = tuple(t for t, f in FORMATS.items() if f.in_wheel)
"""The types the ``nvidia-pytriton`` Triton can load: ``("python",)``."""


# --------------------------------------------------------------------------
# Pure parts: config.pbtxt


@dataclasses.dataclass(frozen=True)
class TextField:
    """One top-level field of a protobuf text-format document."""

    name: str
    start: int
    """Offset of the field's name."""
    end: int
    """Offset just past its value (a scalar, a list or a message)."""
    value: str | None
    """The decoded value of a string scalar; ``None`` for anything else."""


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<word>[A-Za-z0-9_.+-]+)
  | (?P<open>[{\[<])
  | (?P<close>[}\]>])
  | (?P<colon>:)
  | (?P<separator>[,;])
    """,
    re.VERBOSE,
)

_CLOSING = {"{": "}", "[": "]", "<": ">"}


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise ValueError(f"line {line}: unexpected {text[pos]!r}")
        kind = m.lastgroup or ""
        if kind not in ("space", "comment"):
            found.append(_Token(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return found


def _decode_string(literal: str) -> str | None:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def top_level_fields(text: str) -> tuple[TextField, ...]:
    """The top-level fields of a config.pbtxt, with where each one lies.

    A small reader of protobuf's text format, enough to find and replace
    fields without knowing the schema (so a config written for a newer Triton
    passes through untouched): ``name: "x"``, ``name: 'a' "b"`` (adjacent
    strings join), ``input [ ... ]``, ``optimization { ... }``, ``<...>``,
    ``#`` comments, ``,``/``;`` separators. Raises ``ValueError`` saying
    where the text is malformed.
    """
    tokens = _tokens(text)
    fields: list[TextField] = []
    i = 0

    def line_of(token: _Token) -> int:
        return text.count("\n", 0, token.start) + 1

    def skip_group(j: int) -> int:
        """Index just past the bracket group opening at ``j``."""
        stack = [tokens[j].text]
        j += 1
        while stack:
            if j >= len(tokens):
                raise ValueError(f"{stack[-1]!r} is never closed")
            t = tokens[j]
            if t.kind == "open":
                stack.append(t.text)
            elif t.kind == "close":
                if _CLOSING[stack[-1]] != t.text:
                    raise ValueError(f"line {line_of(t)}: unexpected {t.text!r}")
                stack.pop()
            j += 1
        return j

    while i < len(tokens):
        t = tokens[i]
        if t.kind == "separator":
            i += 1
            continue
        if t.kind != "word":
            raise ValueError(f"line {line_of(t)}: expected a field name, found {t.text!r}")
        name, start = t.text, t.start
        i += 1
        if i < len(tokens) and tokens[i].kind == "colon":
            i += 1
        if i >= len(tokens):
            raise ValueError(f"line {line_of(t)}: field {name!r} has no value")
        v = tokens[i]
        value: str | None = None
        if v.kind == "open":
            i = skip_group(i)
        elif v.kind == "string":
            parts = []
            while i < len(tokens) and tokens[i].kind == "string":
                parts.append(_decode_string(tokens[i].text))
                i += 1
            value = None if any(p is None for p in parts) else "".join(p or "" for p in parts)
        elif v.kind == "word":
            i += 1
        else:
            raise ValueError(f"line {line_of(v)}: field {name!r} has no value")
        fields.append(TextField(name, start, tokens[i - 1].end, value))
    return tuple(fields)


def quote(value: str) -> str:
    """``value`` as a text-format string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def named_config(model_id: str, fmt: ModelFormat, user_config: str) -> str:
    """The user's config.pbtxt, unchanged but for its top-level ``name``,
    which becomes ``model_id`` (added at the top where there is none), and a
    ``backend`` (or ``platform``) line added where it names neither. Raises
    ``ValueError`` for text that is not a text-format message."""
    fields = top_level_fields(user_config)
    out = user_config
    names = [f for f in fields if f.name == "name"]
    for f in reversed(names):
        out = out[: f.start] + f"name: {quote(model_id)}" + out[f.end :]
    if not names:
        out = f"name: {quote(model_id)}\n" + out
    if not any(f.name in ("backend", "platform") for f in fields):
        out = out.rstrip("\n") + "\n" + _runtime_line(fmt)
    return out


def generated_config(model_id: str, fmt: ModelFormat) -> str:
    """A config.pbtxt for a folder that came without one. Raises
    :class:`mesh.core.errors.ModelLoadFailed` for a format whose inputs and outputs
    Triton cannot find out by itself."""
    if not fmt.config_generated:
        raise errors.ModelLoadFailed(
            model_id,
            f"a {fmt.model_type} model needs a {CONFIG_FILE} listing its inputs and "
            "outputs (Triton cannot read them from the model file); none is in the folder",
        )
    return (
        f"# Written by meshserve: the model came without a {CONFIG_FILE}.\n"
        f"name: {quote(model_id)}\n" + _runtime_line(fmt) + fmt.generated_extra
    )


def _runtime_line(fmt: ModelFormat) -> str:
    if fmt.platform:
        return f"platform: {quote(fmt.platform)}\n"
    return f"backend: {quote(fmt.backend)}\n"


# --------------------------------------------------------------------------
# Pure parts: types and the folder layout


def format_for(model_id: str, model_type: str, served: Sequence[str]) -> ModelFormat:
    """The :class:`ModelFormat` of ``model_type`` if this Triton serves it
    (``served``); raises :class:`mesh.core.errors.ModelLoadFailed` naming the
    types it does serve, and the backend a known type would need."""
    fmt = FORMATS.get(model_type)
    supported = ", ".join(served) or "none"
    if fmt is not None and model_type in served:
        return fmt
    if fmt is not None:
        needs = fmt.backend or fmt.platform
        raise errors.ModelLoadFailed(
            model_id,
            f"model type {model_type!r} needs Triton's {needs} backend, which this triton "
            f"runtime does not have (supported: {supported})",
        )
    raise errors.ModelLoadFailed(
        model_id,
        f"model type {model_type!r} is not supported by the triton runtime "
        f"(supported: {supported})",
    )


@dataclasses.dataclass(frozen=True)
class Move:
    """Rename ``source`` to ``target`` (paths relative to the model folder)."""

    source: str
    target: str


@dataclasses.dataclass(frozen=True)
class Layout:
    """What turns a pulled folder into a Triton model folder."""

    moves: tuple[Move, ...]
    """Renames, in order; empty when the folder has version folders already."""
    config: str
    """The config.pbtxt to write."""


def is_runtime_file(relative: str) -> bool:
    """Whether a path in a model folder is not the model: ``config.pbtxt``
    at the top, and hidden files or folders (markers)."""
    return relative == CONFIG_FILE or any(p.startswith(".") for p in relative.split("/"))


def is_version_folder(name: str) -> bool:
    """Whether Triton reads ``name`` as a version folder (a positive integer)."""
    return re.fullmatch(r"[0-9]+", name) is not None and int(name) > 0


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED_FILES_IN_ERRORS])
    more = len(names) - _LISTED_FILES_IN_ERRORS
    return shown + (f" and {more} more" if more > 0 else "")


def plan_layout(
    model_id: str, fmt: ModelFormat, files: Iterable[str], user_config: str | None
) -> Layout:
    """How to make the folder holding ``files`` (paths relative to it,
    ``/``-separated) a Triton model folder named ``model_id``.

    - Version folders (``1/``, ``2/``...) present: the files stay where they
      are.
    - A folder model (``saved_model.pb`` at the top for ``tensorflow``):
      everything moves into ``1/<default file>/``.
    - Otherwise everything moves into ``1/``; the model file is renamed to
      Triton's default name (``model.py``) when it is the only file with the
      type's ending and no file has that name already, unless the user's
      config names its own ``default_model_filename``.

    Raises :class:`mesh.core.errors.ModelLoadFailed` for an empty folder, one with
    no model file or several candidates, or a config.pbtxt that is not text
    format.
    """
    listed = sorted(f for f in files if not is_runtime_file(f))
    fields: tuple[TextField, ...] = ()
    if user_config is not None:
        try:
            fields = top_level_fields(user_config)
            config = named_config(model_id, fmt, user_config)
        except ValueError as e:
            raise errors.ModelLoadFailed(model_id, f"{CONFIG_FILE} is malformed: {e}") from None
    else:
        config = generated_config(model_id, fmt)
    entries = sorted({f.split("/", 1)[0] for f in listed})
    if not entries:
        raise errors.ModelLoadFailed(model_id, "the model folder is empty")
    if any(is_version_folder(e) for e in entries if any(f.startswith(e + "/") for f in listed)):
        return Layout((), config)
    if fmt.folder_marker and fmt.folder_marker in entries:
        return Layout(tuple(Move(e, f"1/{fmt.default_file}/{e}") for e in entries), config)
    user_default = next(
        (f.value for f in fields if f.name == "default_model_filename" and f.value), None
    )
    wanted = user_default or fmt.default_file
    if wanted in entries:
        return Layout(tuple(Move(e, f"1/{e}") for e in entries), config)
    if user_default:
        raise errors.ModelLoadFailed(
            model_id,
            f"{CONFIG_FILE} names default_model_filename {user_default!r}, which is not in "
            f"the folder (found: {_some(listed)})",
        )
    candidates = [e for e in entries if e.lower().endswith(fmt.suffixes)]
    if len(candidates) != 1:
        wanted_files = ", ".join(f"*{s}" for s in fmt.suffixes)
        problem = (
            f"several {fmt.model_type} model files ({_some(candidates)}); name the model's "
            f"{fmt.default_file}, or set default_model_filename in {CONFIG_FILE}"
            if candidates
            else f"no {fmt.model_type} model file ({wanted_files}) in the folder: {_some(listed)}"
        )
        raise errors.ModelLoadFailed(model_id, problem)
    moves = [Move(e, f"1/{fmt.default_file if e in candidates else e}") for e in entries]
    return Layout(tuple(moves), config)


# --------------------------------------------------------------------------
# Pure parts: the process and the size


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


def reported_bytes(statistics: Any, gpu: bool) -> int | None:
    """The memory Triton itself reports for a model (``ModelStatistics``
    ``memory_usage``: backends that report it, like TensorRT's; the Python
    backend does not), in the pool the adapter counts; ``None`` without a
    report."""
    total: int | None = None
    for model in statistics.model_stats:
        for usage in model.memory_usage:
            if (usage.type == "GPU") == gpu:
                total = (total or 0) + int(usage.byte_size)
    return total


def model_size(
    predicted: int, measured: int | None, reported: int | None, earlier: int | None, minimum: int
) -> int:
    """The size to account for a model: :func:`mesh.core.eviction.corrected_size`
    of the prediction and the larger of what we measured and what Triton
    reported; or, for a model already loaded here (``earlier``), the size its
    load found: loading it again is a no-op for Triton, and what the memory
    did meanwhile is noise, not the model."""
    if earlier is not None:
        return earlier
    observed = max((m for m in (measured, reported) if m is not None), default=None)
    return eviction.corrected_size(predicted, observed, minimum)


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


def config_problem(text: str) -> str | None:
    """Why ``text`` is not a valid ``ModelConfig`` (line, column and field),
    or ``None``. Triton's own answer to a bad config.pbtxt says only "failed
    to read text proto"; this says where. Used only after Triton refused a
    config: a config written for a newer Triton may name fields these protos
    do not know, and that alone must not stop a load."""
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        return f"{CONFIG_FILE} {e}"
    return None


# --------------------------------------------------------------------------
# I/O helpers


def list_folder(folder: pathlib.Path) -> list[str]:
    """Paths (relative, ``/``-separated) of the files under ``folder``."""
    found: list[str] = []
    for dirpath, _dirs, names in os.walk(folder):
        base = pathlib.Path(dirpath).relative_to(folder)
        found.extend((base / n).as_posix() for n in names if pathlib.Path(dirpath, n).is_file())
    return sorted(found)


def folder_bytes(folder: pathlib.Path, files: Iterable[str]) -> int:
    """Bytes on disk of the model's files (not config.pbtxt or markers)."""
    total = 0
    for f in files:
        if not is_runtime_file(f):
            with contextlib.suppress(OSError):
                total += (folder / f).stat().st_size
    return total


def prepare_model_folder(model_id: str, fmt: ModelFormat, model_path: pathlib.Path) -> int:
    """Lay the folder out for Triton in place (:func:`plan_layout`) and write
    its config.pbtxt; return the bytes of the model's files."""
    if not model_path.is_dir():
        raise errors.ModelLoadFailed(model_id, f"model folder {model_path} does not exist")
    files = list_folder(model_path)
    config_path = model_path / CONFIG_FILE
    user: str | None = None
    if config_path.is_file():
        try:
            user = config_path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise errors.ModelLoadFailed(model_id, f"cannot read {CONFIG_FILE}: {e}") from e
    layout = plan_layout(model_id, fmt, files, user)
    disk = folder_bytes(model_path, files)
    try:
        for move in layout.moves:
            target = model_path / move.target
            target.parent.mkdir(parents=True, exist_ok=True)
            (model_path / move.source).rename(target)
        tmp = config_path.with_name(f".{CONFIG_FILE}.tmp")
        tmp.write_text(layout.config)
        tmp.replace(config_path)
    except OSError as e:
        raise errors.ModelLoadFailed(model_id, f"cannot lay out {model_path}: {e}") from e
    return disk


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


# --------------------------------------------------------------------------
# The adapter


@dataclasses.dataclass(frozen=True)
class TritonConfig:
    """How to run (or reach) one Triton."""

    model_dir: pathlib.Path
    """Triton's model repository: each model is a folder
    ``<model_dir>/<model_id>`` holding its files when :meth:`TritonAdapter.load`
    is called, laid out for Triton there."""
    venv: pathlib.Path = pathlib.Path(".runtimes/triton")
    """Triton's virtual environment as ``make runtimes`` builds it: the
    ``nvidia-pytriton`` wheel, with ``tritonserver/`` copied out of it."""
    endpoint: str = ""
    """``host:port`` of the gRPC endpoint of a Triton already running
    (NVIDIA's image, beside the node in its pod), which must serve
    ``model_dir`` as its repository with ``--model-control-mode=explicit``;
    empty: start our own process."""
    host: str = "127.0.0.1"
    """Address our own Triton listens on."""
    grpc_port: int = 0
    """V2 gRPC port of our own Triton; 0 picks a free one at start."""
    http_port: int | None = None
    """Triton's HTTP/REST port (the mesh speaks gRPC only); ``None``: no HTTP
    server, 0: a free port."""
    log_path: pathlib.Path | None = None
    """Where our Triton's output goes; default ``<model_dir>/.triton/triton.log``."""
    model_types: tuple[str, ...] = WHEEL_MODEL_TYPES
    """The model types this Triton serves (keys of :data:`FORMATS`). The
    wheel's Triton has the Python backend only; NVIDIA's image serves
    ``python``, ``onnx``, ``pytorch``, ``tensorflow`` and ``tensorrt``."""
    memory_pool: str = "auto"
    """Which memory a model's size counts: ``host`` (RSS growth of the
    runtime's process tree), ``gpu`` (GPU memory growth, NVML), or ``auto``:
    ``gpu`` when NVML sees a GPU at start and this Triton serves a type
    other than ``python`` (whose generated configs run on the CPU), else
    ``host``. It must be the memory the node's capacity counts
    (:attr:`TritonAdapter.counts_gpu_memory` says which it settled on)."""
    start_timeout_seconds: float = 60.0
    """Longest wait for ServerReady after starting (or connecting)."""
    load_timeout_seconds: float = 120.0
    """Longest a single ``RepositoryModelLoad`` may take; then the load counts
    as failed (and the model is unloaded)."""
    unload_timeout_seconds: float = 60.0
    """Longest wait for an unloaded model to be gone."""
    stop_timeout_seconds: float = 15.0
    """Triton's ``--exit-timeout-secs``; it is killed 5 s after that."""
    size_multiplier: float = 1.25
    """Predicted memory of a model: its bytes on disk * this (plus, counting
    host memory, its format's per-instance overhead)."""
    min_model_size_bytes: int = 1024 * 1024
    """Floor of every reported model size."""
    extra_args: tuple[str, ...] = ()
    """More ``tritonserver`` options for our own Triton (e.g.
    ``--backend-config=python,shm-default-byte-size=...``)."""

    def __post_init__(self) -> None:
        unknown = [t for t in self.model_types if t not in FORMATS]
        if unknown:
            raise errors.ConfigError(
                f"triton model types {unknown} are unknown (known: {', '.join(FORMATS)})"
            )
        if self.memory_pool not in MEMORY_POOLS:
            raise errors.ConfigError(
                f"triton memory_pool {self.memory_pool!r} is not one of {', '.join(MEMORY_POOLS)}"
            )


class TritonAdapter:
    """:class:`mesh.core.interfaces.RuntimeAdapter` for one Triton process.

    Loads and unloads are serialised: one at a time is what makes the memory
    growth across a load that load's own (an unload finishing during a load
    would hide the load's growth). Triton could load several models at once.
    """

    name = "triton"

    def __init__(self, config: TritonConfig) -> None:
        self.config = config
        self._child: processes.ChildProcess | None = None
        self._grpc_port = config.grpc_port
        self._endpoint_pid: int | None = None
        self._gpu = config.memory_pool == "gpu"
        self._sizes: dict[str, int] = {}
        self._v2 = v2conn.V2Connection(lambda: self.grpc_target, _CHANNEL_OPTIONS)

    # -- addresses ---------------------------------------------------------

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the V2 gRPC endpoint (raises
        :class:`mesh.core.errors.RuntimeUnavailable` before :meth:`start` picked a
        port)."""
        return v2conn.target(self.config.endpoint, self.config.host, self._grpc_port, "Triton")

    @property
    def pid(self) -> int | None:
        """Process id of the Triton whose memory we measure: the one we
        started, or the visible process listening on the endpoint's port."""
        if self._child is not None:
            return self._child.pid if self._child.running() else None
        return self._endpoint_pid

    @property
    def log_path(self) -> pathlib.Path:
        """Where our Triton's output goes."""
        return self.config.log_path or self.config.model_dir / WORK_DIR_NAME / "triton.log"

    @property
    def counts_gpu_memory(self) -> bool:
        """Whether model sizes count GPU memory (else host memory); settled
        by :meth:`start` for ``memory_pool="auto"``."""
        return self._gpu

    def supported_model_types(self) -> tuple[str, ...]:
        return tuple(self.config.model_types)

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        if cfg.memory_pool == "auto":
            gpu_types = [t for t in cfg.model_types if t != "python"]
            self._gpu = bool(gpu_types) and await asyncio.to_thread(memory.has_gpu)
        if cfg.endpoint:
            await self._wait_ready(time.monotonic() + cfg.start_timeout_seconds)
            self._endpoint_pid = await asyncio.to_thread(_local_listener, cfg.endpoint)
            log.info(
                "Triton at %s ready; %s",
                cfg.endpoint,
                f"measuring its process {self._endpoint_pid}"
                if self._endpoint_pid
                else "its process is not visible here: sizes are predicted, not measured",
            )
            return
        if self._child is not None and self._child.running():
            return
        install = find_install(cfg.venv)
        self._grpc_port = cfg.grpc_port or processes.free_port(cfg.host)
        http_port = cfg.http_port
        if http_port == 0:
            http_port = processes.free_port(cfg.host)
        work_dir = cfg.model_dir / WORK_DIR_NAME
        work_dir.mkdir(parents=True, exist_ok=True)
        argv = server_args(
            install,
            cfg.model_dir.absolute(),
            cfg.host,
            self._grpc_port,
            http_port,
            cfg.stop_timeout_seconds,
            await asyncio.to_thread(_gpu_count),
            cfg.extra_args,
        )
        child = processes.ChildProcess(
            "tritonserver", argv, self.log_path, env=server_env(os.environ, install), cwd=work_dir
        )
        self._sizes.clear()
        self._child = child
        took = await self._v2.launch(
            "Triton", child, self.log_path, cfg.start_timeout_seconds, self.stop
        )
        log.info(
            "Triton pid %s ready on %s in %.2f s (sizes count %s memory)",
            child.pid,
            self.grpc_target,
            took,
            "GPU" if self._gpu else "host",
        )

    async def stop(self) -> None:
        """SIGTERM to Triton's process group (its stubs exit with it and
        remove their shared-memory regions), SIGKILL what is left after
        ``stop_timeout_seconds`` + 5 s."""
        child, self._child = self._child, None
        self._sizes.clear()
        await self._v2.close()
        if child is not None:
            await asyncio.to_thread(child.stop, self.config.stop_timeout_seconds + 5)

    async def ready(self) -> bool:
        return await self._v2.ready(self._child)

    async def _wait_ready(self, deadline: float) -> None:
        await self._v2.wait_ready(
            "Triton", self._child, self.log_path, self.config.start_timeout_seconds, deadline
        )

    # -- models ------------------------------------------------------------

    async def load(self, model_id: str, model_type: str, model_path: pathlib.Path) -> int:
        """Lay the folder out, write its config.pbtxt and load the model.

        Returns the model's size in bytes (:func:`model_size`): the
        prediction (bytes on disk * ``size_multiplier``, plus a Python stub's
        ~40 MB when counting host memory), corrected upward by the measured
        growth of the runtime's memory across the load (RSS of its process
        tree, or GPU memory) and by Triton's own report where its backend
        gives one.
        """
        fmt = format_for(model_id, model_type, self.config.model_types)
        disk = await asyncio.to_thread(prepare_model_folder, model_id, fmt, model_path)
        gpu = self._gpu
        predicted = eviction.predicted_size(
            disk, self.config.size_multiplier, self.config.min_model_size_bytes
        ) + (0 if gpu else fmt.instance_overhead_bytes)
        async with self._v2.lock():
            pid = self.pid
            before = await asyncio.to_thread(memory.measure, pid, gpu)
            started = time.monotonic()
            await self._repository_load(model_id, model_path)
            elapsed = time.monotonic() - started
            after = await asyncio.to_thread(memory.measure, pid, gpu)
            reported = await self._reported_bytes(model_id, gpu)
            host = memory.host_growth(before, after)
            on_gpu = memory.gpu_growth(before, after)
            size = model_size(
                predicted,
                on_gpu if gpu else host,
                reported,
                self._sizes.get(model_id),
                self.config.min_model_size_bytes,
            )
            self._sizes[model_id] = size
        log.info(
            "loaded %s (%s) in %.3f s: %d bytes on disk, predicted %d, host growth %s, "
            "GPU growth %s, Triton reported %s, reported %d (%s memory)",
            model_id,
            model_type,
            elapsed,
            disk,
            predicted,
            host,
            on_gpu,
            reported,
            size,
            "GPU" if gpu else "host",
        )
        return size

    async def unload(self, model_id: str) -> None:
        """Unload the model and wait until Triton no longer holds it (its
        stub process gone). A model Triton never had is gone already."""
        async with self._v2.lock():
            started = time.monotonic()
            try:
                await self._v2.stub().RepositoryModelUnload(
                    service_pb2.RepositoryModelUnloadRequest(model_name=model_id),
                    timeout=self.config.unload_timeout_seconds,
                )
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    self._sizes.pop(model_id, None)
                    return
                raise self._unavailable(f"could not unload {model_id!r}", e) from None
            await self._wait_gone(model_id, started + self.config.unload_timeout_seconds)
            self._sizes.pop(model_id, None)
            log.info("unloaded %s in %.3f s", model_id, time.monotonic() - started)

    async def _wait_gone(self, model_id: str, deadline: float) -> None:
        stub = self._v2.stub()
        while True:
            try:
                index = await stub.RepositoryIndex(
                    service_pb2.RepositoryIndexRequest(ready=False), timeout=10.0
                )
            except grpc.aio.AioRpcError as e:
                raise self._unavailable(f"could not tell whether {model_id!r} is gone", e) from None
            states = {m.state for m in index.models if m.name == model_id}
            if not states & {"READY", "LOADING", "UNLOADING"}:
                return
            if time.monotonic() >= deadline:
                raise errors.RuntimeUnavailable(
                    f"Triton at {self.grpc_target} did not finish unloading {model_id!r} within "
                    f"{self.config.unload_timeout_seconds:g} s (state: {', '.join(sorted(states))})"
                )
            await asyncio.sleep(UNLOAD_POLL_SECONDS)

    async def _repository_load(self, model_id: str, model_path: pathlib.Path) -> None:
        try:
            await self._v2.stub().RepositoryModelLoad(
                service_pb2.RepositoryModelLoadRequest(model_name=model_id),
                timeout=self.config.load_timeout_seconds,
            )
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or (
                self._child is not None and not self._child.running()
            ):
                raise self._unavailable(f"could not load {model_id!r}", e) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                with contextlib.suppress(grpc.aio.AioRpcError):  # it goes on loading
                    await self._v2.stub().RepositoryModelUnload(
                        service_pb2.RepositoryModelUnloadRequest(model_name=model_id), timeout=5.0
                    )
                raise errors.ModelLoadFailed(
                    model_id,
                    f"Triton did not finish loading within {self.config.load_timeout_seconds:g} s",
                ) from None
            reason = (e.details() or code.name).strip().rstrip(";").strip()
            if self._child is not None:
                lines = self._child.log_tail(200).splitlines()
                reason += "".join(f"; {m}" for m in triton_log_errors(model_id, lines))
            if "text proto" in reason:
                problem = await asyncio.to_thread(_config_problem_of, model_path)
                reason += f"; {problem}" if problem else ""
            raise errors.ModelLoadFailed(model_id, f"Triton: {reason} ({code.name})") from None

    async def _reported_bytes(self, model_id: str, gpu: bool) -> int | None:
        try:
            stats = await self._v2.stub().ModelStatistics(
                service_pb2.ModelStatisticsRequest(name=model_id), timeout=5.0
            )
        except grpc.aio.AioRpcError as e:
            log.debug("no statistics for %s: %s", model_id, e.details())
            return None
        return reported_bytes(stats, gpu)

    def _unavailable(self, what: str, e: Any) -> errors.RuntimeUnavailable:
        message = f"Triton at {self.grpc_target} {what}: {e.code().name}: {e.details()}"
        if self._child is not None and not self._child.running():
            message += (
                f"; it exited with {self._child.returncode()}, its log ends:\n"
                f"{self._child.log_tail()}"
            )
        return errors.RuntimeUnavailable(message)

    # -- plumbing ----------------------------------------------------------


def _config_problem_of(model_path: pathlib.Path) -> str | None:
    try:
        return config_problem((model_path / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot read {CONFIG_FILE}: {e}"


def _gpu_count() -> int:
    snapshot = memory.gpu_snapshot()
    return len(snapshot.devices) if snapshot else 0


_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def _local_listener(endpoint: str) -> int | None:
    """The visible process listening on a local endpoint's port (a Triton
    container in the same pod with a shared process namespace)."""
    host, _, port = endpoint.rpartition(":")
    if host not in _LOCAL_HOSTS or not port.isdigit():
        return None
    return memory.process_listening_on(int(port))
