"""scikit-learn models loaded in a few milliseconds, not tens.

MLServer's sklearn runtime loads every model with ``joblib.load``, and
joblib unpickles through the pure-Python ``pickle._Unpickler``: a 200-tree
forest takes ~47 ms, on MLServer's one event loop, so every other request
to that MLServer waits as long (measured: p90 1.2 → 66 ms during loads).
The same model in a plain pickle (the C unpickler) loads in ~6 ms.

So an MLServer the node starts serves sklearn with this class: the first
load of a file is ``joblib.load`` as before, and then keeps the model beside
it as a hidden plain pickle (``.<file>.meshserve-pickle``) stamped with the
file's size and modification time; a later load of the same file (a reload
from the node's disk tier, or of a local model after eviction) reads that
instead. A stamp that does not match, or a pickle that does not load, falls
back to ``joblib.load``; a model that cannot be pickled keeps no copy. Both
are pickles: the trust is the same as the user's file.
"""

from __future__ import annotations

import logging
import os
import pathlib
import pickle
from typing import Any

import joblib
from mlserver.utils import get_model_uri
from mlserver_sklearn import SKLearnModel as MLServerSKLearnModel
from mlserver_sklearn.sklearn import WELLKNOWN_MODEL_FILENAMES

log = logging.getLogger(__name__)
SUFFIX = ".meshserve-pickle"


def kept_path(model_file: pathlib.Path) -> pathlib.Path:
    """Where the plain pickle of ``model_file`` is kept (hidden)."""
    return model_file.with_name(f".{model_file.name}{SUFFIX}")


def _stamp(model_file: pathlib.Path) -> tuple[int, int]:
    st = os.stat(model_file)
    return st.st_size, st.st_mtime_ns


def load_model(model_file: pathlib.Path) -> Any:
    """The model in ``model_file``, from its kept plain pickle when that is
    the same file's; else by ``joblib.load``, keeping one for next time."""
    kept = kept_path(model_file)
    stamp = _stamp(model_file)
    if kept.is_file():
        try:
            with open(kept, "rb") as f:
                kept_stamp, model = pickle.load(f)
            if tuple(kept_stamp) == stamp:
                return model
        except Exception as e:  # a damaged or foreign copy: load the file itself
            log.warning("ignoring %s: %s", kept, e)
    model = joblib.load(model_file)
    tmp = kept.with_name(kept.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            pickle.dump((stamp, model), f, protocol=5)
        os.replace(tmp, kept)
    except Exception as e:  # unpicklable, or a read-only folder: no copy kept
        log.info("not keeping a plain pickle of %s: %s", model_file, e)
        tmp.unlink(missing_ok=True)
    return model


class SKLearnModel(MLServerSKLearnModel):  # type: ignore[misc]
    """MLServer's sklearn model, loaded through :func:`load_model`."""

    async def load(self) -> bool:
        uri = await get_model_uri(self._settings, wellknown_filenames=WELLKNOWN_MODEL_FILENAMES)
        self._model = load_model(pathlib.Path(uri))
        return True
