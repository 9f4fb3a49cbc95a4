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
"""

from __future__ import annotations

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


def own_settings(root: str, name: str) -> ModelSettings | None:
    """The settings in model ``name``'s own folder when they name it, else
    ``None``. Read in place, as MLServer's walk reads: one small file costs
    less than a hop to a thread."""
    path = settings_path(root, name)
    if path is None or not os.path.isfile(path):
        return None
    try:
        found: ModelSettings = load_model_settings(path)
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
