"""scikit-learn models loaded in a few milliseconds, not tens.

MLServer's sklearn runtime loads every model with ``joblib.load``, whose
pure-Python unpickler takes ~50 ms for a 200-tree forest, on MLServer's one
event loop, so every other request to that MLServer waits as long
(measured: p90 1.2 → 66 ms during loads).

An MLServer the node starts serves sklearn with this class instead. It reads
an uncompressed joblib file (or a plain pickle) with the C unpickler, 3-4 ×
faster (:func:`read_joblib`): joblib's stand-in for each array becomes an
array that reads its bytes from the file as the unpickler builds it, as
joblib's own reader does. Two kinds of model are kept beside their file as
a hidden plain pickle, stamped with the file's size and modification time,
which later loads read instead: one whose arrays sit inside compiled objects
(a KD-tree), which the reader copies through a pickle to make them plain,
and one in a file it leaves to ``joblib.load`` (compressed, joblib's
pre-0.10 layout, another byte order). All are pickles: the trust is the same
as the user's file.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import pickle
import sys
import types
from typing import IO, Any, ClassVar

import joblib
import numpy as np
from mlserver.utils import get_model_uri
from mlserver_sklearn import SKLearnModel as MLServerSKLearnModel
from mlserver_sklearn.sklearn import WELLKNOWN_MODEL_FILENAMES

log = logging.getLogger(__name__)
SUFFIX = ".meshserve-pickle"


class Unsupported(Exception):
    """A file :func:`read_joblib` leaves to ``joblib.load``."""


class _ExactReader:
    """The file without ``peek``: the C unpickler then reads only what it
    uses, so an array's bytes start where the file stands when it is built."""

    __slots__ = ("read", "readinto", "readline")

    def __init__(self, f: IO[bytes]) -> None:
        self.read = f.read
        self.readinto = f.readinto  # type: ignore[attr-defined]
        self.readline = f.readline


class _FileArray(np.ndarray):
    """What joblib's ``NumpyArrayWrapper`` unpickles as here: made empty,
    then filled from the file by the state joblib wrote for it."""

    source: ClassVar[IO[bytes]]
    built: ClassVar[list[_FileArray]]

    def __new__(cls) -> _FileArray:
        return np.ndarray.__new__(cls, (0,), np.uint8)

    def __setstate__(self, state: Any) -> None:
        dtype, shape = state["dtype"], tuple(state["shape"])
        if state.get("subclass") not in (np.ndarray, np.memmap) or not dtype.isnative:
            raise Unsupported(f"an array of {state.get('subclass')}, {dtype}")
        fortran = state.get("order") == "F"
        if dtype.hasobject:  # a nested pickle of the array
            nested = _Unpickler(_ExactReader(self.source))
            nested.source_array = type(self)
            inner = nested.load()
            np.ndarray.__setstate__(self, inner.__reduce__()[2])
            self.built.append(self)
            return
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self.source.read(1)
            self.source.read(padding[0] if padding else 0)
        size = dtype.itemsize * math.prod(int(n) for n in shape)
        data = self.source.read(size)
        if len(data) != size:
            raise Unsupported("the file ends inside an array")
        np.ndarray.__setstate__(self, (1, shape, dtype, fortran, data))
        self.built.append(self)

    def __reduce__(self) -> Any:
        return np.asarray(self).__reduce__()


class _Unpickler(pickle.Unpickler):
    source_array: type[_FileArray]

    def find_class(self, module: str, name: str) -> Any:
        if module.endswith("numpy_pickle"):
            if name == "NumpyArrayWrapper":
                return self.source_array
            if name in ("NDArrayWrapper", "ZNDArrayWrapper"):
                raise Unsupported("joblib's pre-0.10 layout")
        return super().find_class(module, name)


def read_joblib(model_file: pathlib.Path) -> tuple[Any, bytes | None]:
    """What ``joblib.load(model_file)`` returns, read by the C unpickler, and
    the plain pickle it was copied through when it had to be (worth keeping);
    raises :class:`Unsupported` for a file that is not an uncompressed
    pickle of protocol 2 or later."""
    with open(model_file, "rb") as f:
        if f.read(1) != b"\x80":  # compressed, or a protocol 0/1 pickle
            raise Unsupported("not an uncompressed pickle of protocol 2 or later")
        f.seek(0)
        arrays: type[_FileArray] = type(
            "NumpyArrayWrapper", (_FileArray,), {"source": f, "built": [], "__module__": __name__}
        )
        model = _unpickle(f, arrays)
    done: dict[int, Any] = {}
    model = _plain(model, done)
    # An array the walk did not reach is either gone (copied by what it
    # built) or held inside a compiled object (a KD-tree's data, a random
    # generator's seed): a copy through the C pickler makes those plain too.
    held = any(id(a) not in done and sys.getrefcount(a) > _UNHELD for a in arrays.built)
    arrays.built.clear()  # else the arrays outlive the model until a full collection
    if held:
        pickled = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        return pickle.loads(pickled), pickled
    return model, None


_UNHELD = 3
"""References to an array nothing in the model holds: ``built``, the loop's
name, and ``getrefcount``'s argument."""


def _unpickle(f: IO[bytes], arrays: type[_FileArray]) -> Any:
    unpickler = _Unpickler(_ExactReader(f))
    unpickler.source_array = arrays
    return unpickler.load()  # the unpickler and its memo go with this frame


def _plain(obj: Any, done: dict[int, Any]) -> Any:
    """``obj`` with every array read from the file made a plain ndarray,
    wherever it is reachable through dicts, lists, tuples, object arrays and
    instance attributes: the model then holds what ``joblib.load`` gives."""
    key = id(obj)
    if key in done:
        return done[key]
    if isinstance(obj, _FileArray):
        done[key] = plain = np.asarray(obj)
        return plain
    done[key] = obj
    if isinstance(obj, dict):
        _plain_values(obj, done)
    elif isinstance(obj, list):
        obj[:] = [v if type(v) in _LEAVES else _plain(v, done) for v in obj]
    elif isinstance(obj, tuple):
        items = [v if type(v) in _LEAVES else _plain(v, done) for v in obj]
        if any(a is not b for a, b in zip(items, obj, strict=True)):
            done[key] = obj = type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            for index in np.ndindex(obj.shape):
                obj[index] = _plain(obj[index], done)
    elif not isinstance(obj, _NOT_WALKED) and isinstance(getattr(obj, "__dict__", None), dict):
        _plain_values(vars(obj), done)
    return obj


def _plain_values(values: dict[Any, Any], done: dict[int, Any]) -> None:
    for k, v in values.items():
        if type(v) not in _LEAVES:
            values[k] = _plain(v, done)


_LEAVES = frozenset({int, float, str, bytes, bool, type(None), np.int64, np.float64})
"""Types that hold no array: not walked into (most of a model's values)."""
_NOT_WALKED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
"""Shared by reference, never built from the file: their attributes are not
the model's."""


def kept_path(model_file: pathlib.Path) -> pathlib.Path:
    """Where the plain pickle of ``model_file`` is kept (hidden)."""
    return model_file.with_name(f".{model_file.name}{SUFFIX}")


def _stamp(model_file: pathlib.Path) -> tuple[int, int]:
    st = os.stat(model_file)
    return st.st_size, st.st_mtime_ns


def load_model(model_file: pathlib.Path) -> Any:
    """The model in ``model_file``: from its kept plain pickle when that is
    the same file's; else by :func:`read_joblib`; else by ``joblib.load``.
    A model either of those had to pickle is kept for next time."""
    kept = kept_path(model_file)
    stamp = _stamp(model_file)
    if kept.is_file():
        try:
            with open(kept, "rb") as f:
                if tuple(pickle.load(f)) == stamp:
                    return pickle.load(f)
        except Exception as e:  # a damaged or foreign copy: load the file itself
            log.warning("ignoring %s: %s", kept, e)
    try:
        model, pickled = read_joblib(model_file)
    except Exception as e:  # joblib.load raises its own error, if any
        log.debug("%s is left to joblib: %s", model_file, e)
        model, pickled = joblib.load(model_file), None
        try:
            pickled = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # unpicklable: no copy kept
            log.info("not keeping a plain pickle of %s: %s", model_file, err)
    if pickled is not None:
        _keep(kept, stamp, pickled)
    return model


def _keep(kept: pathlib.Path, stamp: tuple[int, int], pickled: bytes) -> None:
    """Write the stamp, then the model's pickle, to ``kept`` (atomically)."""
    tmp = kept.with_name(kept.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            pickle.dump(stamp, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.write(pickled)
        os.replace(tmp, kept)
    except OSError as e:  # a read-only folder, a full disk: no copy kept
        log.info("not keeping a plain pickle at %s: %s", kept, e)
        tmp.unlink(missing_ok=True)


class SKLearnModel(MLServerSKLearnModel):  # type: ignore[misc]
    """MLServer's sklearn model, loaded through :func:`load_model`."""

    async def load(self) -> bool:
        uri = await get_model_uri(self._settings, wellknown_filenames=WELLKNOWN_MODEL_FILENAMES)
        self._model = load_model(pathlib.Path(uri))
        return True
