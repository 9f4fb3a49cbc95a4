"""MLServer's model repository, finding a model in one file read, not a walk.

MLServer answers every ``RepositoryModelLoad`` by listing its whole
repository: it globs the folder for every ``model-settings.json`` and parses
each one (pydantic-settings, about a millisecond apiece), then keeps those
whose name matches. A node's MLServer holds a folder per model, so each load
cost a millisecond per model on the node, on MLServer's one event loop
(profiled: 42 % of MLServer's time during back-to-back loads of 8 models).

The node always writes a model's settings at ``<root>/<model id>/
model-settings.json`` (:func:`runtime_adapters.mlserver.prepare_model_folder`),
so :meth:`FolderPerModelRepository.find` reads that one file and returns it
when it names the model; anything else (a name that is not a plain folder
name, a folder without settings, settings naming another model) falls back
to MLServer's own walk, so a repository laid out by hand behaves as before.

Even that one parse took 2 ms (pydantic-settings reads the environment and
a dotenv source for every field; profiled: 42 % of a warm load of a
2 MiB forest). A model evicted and loaded again brings the same file, so
the parsed settings are kept per path and reused while the file's bytes
are the same: a deep copy takes 0.03 ms. The environment they were read
with is MLServer's, which does not change while it runs.
"""

from __future__ import annotations

import collections
import os

from mlserver.logging import logger
from mlserver.repository.load import load_model_settings
from mlserver.repository.repository import (
    DEFAULT_MODEL_SETTINGS_FILENAME,
    SchemalessModelRepository,
)
from mlserver.settings import ModelSettings


def settings_path(root: str, name: str) -> str | None:
    """Where the node writes the settings of model ``name``; ``None`` when
    ``name`` is not a plain folder name (MLServer's walk decides then)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return None
    return os.path.join(os.path.abspath(root), name, DEFAULT_MODEL_SETTINGS_FILENAME)


PARSED_KEPT = 4096
"""How many models' parsed settings are kept (least recently used go)."""

_parsed: collections.OrderedDict[str, tuple[bytes, ModelSettings]] = collections.OrderedDict()


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def parsed_settings(path: str) -> ModelSettings:
    """``load_model_settings(path)``, reused while the file's bytes stay the
    same (a copy each time: MLServer may change what it is given)."""
    data = _read(path)
    kept = _parsed.get(path)
    if kept is not None and data is not None and kept[0] == data:
        _parsed.move_to_end(path)
        return kept[1].model_copy(deep=True)
    found: ModelSettings = load_model_settings(path)
    if data is not None and _read(path) == data:  # unchanged while parsed
        _parsed[path] = (data, found.model_copy(deep=True))
        _parsed.move_to_end(path)
        while len(_parsed) > PARSED_KEPT:
            _parsed.popitem(last=False)
    return found


def own_settings(root: str, name: str) -> ModelSettings | None:
    """The settings in model ``name``'s own folder when they name it, else
    ``None``. Read in place, as MLServer's walk reads: one small file costs
    less than a hop to a thread."""
    path = settings_path(root, name)
    if path is None or not os.path.isfile(path):
        return None
    try:
        found = parsed_settings(path)
    except Exception:  # MLServer's walk logs and skips it the same way
        logger.exception(f"Failed load model settings at {path}.")
        return None
    return found if found.name == name else None


class FolderPerModelRepository(SchemalessModelRepository):  # type: ignore[misc]
    """MLServer's schemaless repository, with :meth:`find` reading only the
    model's own folder when it is laid out the way the node lays it out."""

    async def find(self, name: str) -> list[ModelSettings]:
        found = own_settings(self._root, name) if self._root else None
        if found is not None:
            return [found]
        result: list[ModelSettings] = await super().find(name)
        return result
