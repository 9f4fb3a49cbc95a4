"""Turning a pulled folder into a Triton model folder, in place.

Triton serves ``<repo>/<name>/`` holding ``config.pbtxt`` and numbered
version folders (``1/model.py``). The puller leaves a model's files in
``<model_dir>/<model_id>``, which is a folder of Triton's repository: the
files move into ``1/`` there (unless the folder has version folders
already), the model file gets Triton's default name, and ``config.pbtxt`` is
written: the user's, renamed, or one generated where the format allows it.
:func:`plan_layout` decides the moves (pure); :func:`prepare_model_folder`
makes them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Iterable

from mesh.core import errors
from runtime_adapters import v2_runtime
from runtime_adapters.triton import formats, pbtxt


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
    return v2_runtime.is_runtime_file(relative, pbtxt.CONFIG_FILE)


def is_version_folder(name: str) -> bool:
    """Whether Triton reads ``name`` as a version folder (a positive integer)."""
    return re.fullmatch(r"[0-9]+", name) is not None and int(name) > 0


def _config_of(
    model_id: str, fmt: formats.TritonFormat, user_config: str | None
) -> tuple[str, tuple[pbtxt.TextField, ...]]:
    """The config.pbtxt to write, and the top-level fields of the user's."""
    if user_config is None:
        return pbtxt.generated_config(model_id, fmt), ()
    try:
        fields = pbtxt.top_level_fields(user_config)
        return pbtxt.named_config(model_id, fmt, user_config), fields
    except ValueError as e:
        raise errors.ModelLoadFailed(model_id, f"{pbtxt.CONFIG_FILE} is malformed: {e}") from None


def plan_layout(
    model_id: str, fmt: formats.TritonFormat, files: Iterable[str], user_config: str | None
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
    config, fields = _config_of(model_id, fmt, user_config)
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
            f"{pbtxt.CONFIG_FILE} names default_model_filename {user_default!r}, which is not in "
            f"the folder (found: {v2_runtime.some_names(listed)})",
        )
    candidates = [e for e in entries if e.lower().endswith(fmt.suffixes)]
    if len(candidates) != 1:
        wanted_files = ", ".join(f"*{s}" for s in fmt.suffixes)
        problem = (
            f"several {fmt.model_type} model files ({v2_runtime.some_names(candidates)}); "
            f"name the model's {fmt.default_file}, or set default_model_filename in "
            f"{pbtxt.CONFIG_FILE}"
            if candidates
            else f"no {fmt.model_type} model file ({wanted_files}) in the folder: "
            f"{v2_runtime.some_names(listed)}"
        )
        raise errors.ModelLoadFailed(model_id, problem)
    moves = [Move(e, f"1/{fmt.default_file if e in candidates else e}") for e in entries]
    return Layout(tuple(moves), config)


def prepare_model_folder(model_id: str, fmt: formats.TritonFormat, model_path: pathlib.Path) -> int:
    """Lay the folder out for Triton in place (:func:`plan_layout`) and write
    its config.pbtxt; return the bytes of the model's files."""
    if not model_path.is_dir():
        raise errors.ModelLoadFailed(model_id, f"model folder {model_path} does not exist")
    files = v2_runtime.list_folder(model_path)
    config_path = model_path / pbtxt.CONFIG_FILE
    user: str | None = None
    if config_path.is_file():
        try:
            user = config_path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise errors.ModelLoadFailed(model_id, f"cannot read {pbtxt.CONFIG_FILE}: {e}") from e
    layout = plan_layout(model_id, fmt, files, user)
    disk = v2_runtime.folder_bytes(model_path, files, pbtxt.CONFIG_FILE)
    try:
        for move in layout.moves:
            target = model_path / move.target
            target.parent.mkdir(parents=True, exist_ok=True)
            (model_path / move.source).rename(target)
        v2_runtime.write_atomically(config_path, layout.config)
    except OSError as e:
        raise errors.ModelLoadFailed(model_id, f"cannot lay out {model_path}: {e}") from e
    return disk
