"""The process environment, completed with what pure settings cannot read.

:func:`mesh.core.settings.from_env` is pure: it turns a mapping into typed
settings and reads nothing. Three of a node's settings live outside that
mapping: a ModelMesh ``etcd_connection`` file that ``KV_STORE`` may name (its
``model-serving-etcd`` Secret, mounted), this host's name (the default
instance id), and where the runtimes were installed, which must not depend
on the folder a user starts ``meshserve`` from. This edge reads them and
hands the settings a plain mapping.
"""

from __future__ import annotations

import pathlib
import socket
from collections.abc import Mapping

from mesh.core import errors, etcd_connection


def runtimes_dir(env: Mapping[str, str]) -> pathlib.Path:
    """Where the runtimes' virtual environments are: ``MESHSERVE_RUNTIMES_DIR``,
    else the ``.runtimes`` folder of the checkout meshserve runs from (what
    ``make install`` made), else ``.runtimes`` in the working directory."""
    named = (env.get("MESHSERVE_RUNTIMES_DIR") or "").strip()
    if named:
        return pathlib.Path(named)
    installed = pathlib.Path(__file__).resolve().parents[2] / ".runtimes"
    return installed if installed.is_dir() else pathlib.Path(".runtimes")


def completed(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with an ``etcd_connection`` file's variables, a default
    ``MM_INSTANCE_ID`` (this host's name) and the runtimes' folder
    (:func:`runtimes_dir`) filled in."""
    out = dict(env)
    out["MESHSERVE_RUNTIMES_DIR"] = str(runtimes_dir(env))
    kv_store_text = env.get("KV_STORE") or ""
    if kv_store_text.startswith("etcd:/") and not kv_store_text.startswith("etcd://"):
        path = kv_store_text.removeprefix("etcd:")
        try:
            text = pathlib.Path(path).read_text()
        except OSError as e:
            raise errors.ConfigError(f"KV_STORE: cannot read {path}: {e.strerror}") from None
        out.update(etcd_connection.etcd_connection_env(text, path, env))
    if not out.get("MM_INSTANCE_ID"):
        out["MM_INSTANCE_ID"] = socket.gethostname()
    return out
