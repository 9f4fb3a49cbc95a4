"""Local storage: a folder or file on this machine, or a mounted PVC.

A model's ``path`` is absolute, relative to the models root, or a ``file://``
URI. A ``pvc`` storage configuration (``{"type": "pvc", "name": "claim"}``,
as in ModelMesh Serving) names a volume mounted at ``<models_root>/<name>``
(run the node with the models root at ``/pvc_mounts`` for ModelMesh's
layout), and the path is taken inside it, never above it.

:class:`LocalStore` is the :class:`puller.store.Store` for both, used by
:mod:`puller.model_puller` like any other backend, so local models get the
same staging, checks and archive unpacking; a file that is not an archive
to unpack is hard-linked into the staging folder rather than copied where
the file system allows (:meth:`LocalStore.link`).
"""

from __future__ import annotations

import os
import pathlib
import urllib.parse
from collections.abc import Mapping
from typing import Any

from mesh.core import errors
from puller import store

CHUNK_BYTES = 1024 * 1024


def resolve_path(path: str, models_root: pathlib.Path) -> pathlib.Path:
    """The local path a model's ``path`` names (pure)."""
    if path.startswith("file://"):
        parsed = urllib.parse.urlparse(path)
        if parsed.netloc not in ("", "localhost"):
            raise errors.InvalidRequest(f"file URI {path!r} names a remote host")
        return pathlib.Path(urllib.parse.unquote(parsed.path))
    if "://" in path:
        scheme = path.split("://", 1)[0]
        raise errors.InvalidRequest(
            f"storage path {path!r}: {scheme}:// storage is not supported by the local puller"
        )
    p = pathlib.Path(path)
    return p if p.is_absolute() else models_root / p


def pvc_root(fields: Mapping[str, Any], models_root: pathlib.Path) -> pathlib.Path:
    """The folder where the PVC a ``pvc`` configuration names is mounted
    (pure); raises :class:`puller.store.BadConfig` for a missing or unsafe
    name."""
    name = fields.get("name")
    if not isinstance(name, str) or not name:
        raise store.BadConfig('a "pvc" storage configuration needs a "name" (the claim)')
    if "/" in name or name in (".", ".."):
        raise store.BadConfig(f"PVC name {name!r} is not a plain name")
    return models_root / name


def inside(root: pathlib.Path, path: str) -> pathlib.Path:
    """``root/path``, refusing a ``path`` that climbs above ``root`` (pure)."""
    stripped = path.strip("/")
    if not stripped:
        return root
    try:
        relative = store.safe_relative(stripped)
    except store.UnsafeArchive:
        raise store.BadConfig(f"path {path!r} leads outside the volume") from None
    return root / relative


class LocalStore:
    """Files on this machine as a :class:`puller.store.Store`.

    With a ``root`` (a PVC mount), paths are taken inside it; without one,
    as :func:`resolve_path` reads them (absolute, ``file://``, or relative to
    the models root). Links are followed, as a copy would.
    """

    def __init__(self, models_root: pathlib.Path, root: pathlib.Path | None = None) -> None:
        self._models_root = models_root
        self._root = root

    def _file(self, path: str) -> pathlib.Path:
        if self._root is not None:
            return inside(self._root, path)
        try:
            return resolve_path(path, self._models_root)
        except errors.InvalidRequest as e:
            raise store.BadConfig(e.message) from None

    def location(self, path: str) -> str:
        try:
            return str(self._file(path))
        except store.StoreError:
            return path

    def list(self, path: str) -> list[store.RemoteObject]:
        base = path.rstrip("/")
        source = self._file(path)
        if self._root is not None and not self._root.is_dir():
            raise store.NotFound(f"the volume is not mounted at {self._root}")
        try:
            if source.is_file():
                size = source.stat().st_size
                return [store.RemoteObject(base, size, name=source.name, handle=str(source))]
            if not source.is_dir():
                raise store.NotFound(f"no file or folder at {source}")
            found: list[store.RemoteObject] = []
            for folder, _dirs, files in os.walk(source, followlinks=True):
                for f in files:
                    full = pathlib.Path(folder) / f
                    relative = full.relative_to(source).as_posix()
                    key = f"{base}/{relative}" if base else relative
                    found.append(store.RemoteObject(key, full.stat().st_size, handle=str(full)))
            return found
        except PermissionError as e:
            raise store.AccessDenied(f"no permission to read {e.filename}") from None

    def link(self, obj: store.RemoteObject, dest: pathlib.Path) -> bool:
        """Hard-link the file into ``dest`` instead of copying it, where the
        file system allows (same device, a file this process may link);
        whether it did. A link costs no bytes and no time whatever the size;
        the runtime never writes into a model file (it replaces its own
        config file), so the user's file stays as it was, and a later change
        to it is seen by the disk tier's check (:mod:`puller.disk_cache`)."""
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(obj.handle, dest)
            if os.path.getsize(dest) == obj.size:
                return True
            dest.unlink()  # changed since it was listed: copy it, never write through a link
        except OSError:
            pass
        return False

    def fetch(self, obj: store.RemoteObject, sink: store.Sink) -> None:
        try:
            with open(obj.handle, "rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    sink.write(chunk)
        except FileNotFoundError:
            raise store.NotFound(f"{obj.handle} disappeared during the copy") from None
        except PermissionError:
            raise store.AccessDenied(f"no permission to read {obj.handle}") from None
