"""Local storage: a folder or file on this machine (or a mounted PVC).

A model's ``path`` is absolute, relative to the models root, or a ``file://``
URI. Its files are copied into ``<model_dir>/<model_id>``: first into a
temporary folder beside it, then renamed into place, so a half-copied model
is never seen by the runtime. A missing path fails the load with a message
naming the model and the path.
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import tempfile
import urllib.parse

from mesh import errors, records


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


class LocalPuller:
    """Copies models from local folders into the node's model directory."""

    def __init__(self, model_dir: pathlib.Path, models_root: pathlib.Path) -> None:
        self._model_dir = model_dir
        self._models_root = models_root

    def sweep(self) -> None:
        """Remove every model folder left by an earlier run (the runtime
        starts empty, so none of them is loaded)."""
        if not self._model_dir.exists():
            return
        for child in self._model_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)

    async def pull(self, model_id: str, record: records.ModelRecord) -> pathlib.Path:
        if record.storage_key:
            raise errors.ModelLoadFailed(
                model_id,
                f"storage key {record.storage_key!r} needs object storage, "
                "which this node's puller does not support",
            )
        try:
            source = resolve_path(record.path, self._models_root)
        except errors.InvalidRequest as e:
            raise errors.ModelLoadFailed(model_id, e.message) from None
        dest = self._model_dir / model_id
        await asyncio.to_thread(self._copy, model_id, source, dest)
        return dest

    def _copy(self, model_id: str, source: pathlib.Path, dest: pathlib.Path) -> None:
        if not source.exists():
            raise errors.ModelLoadFailed(model_id, f"model files not found at {source}")
        self._model_dir.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{model_id}.", dir=self._model_dir))
        try:
            if source.is_dir():
                shutil.copytree(source, staging, dirs_exist_ok=True, symlinks=False)
            else:
                shutil.copy2(source, staging / source.name)
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
        except OSError as e:
            raise errors.ModelLoadFailed(model_id, f"could not copy {source}: {e}") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    async def remove(self, model_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._model_dir / model_id, True)
