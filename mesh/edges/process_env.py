"""The process environment, completed with what pure settings cannot read.

:func:`mesh.core.settings.from_env` is pure: it turns a mapping into typed
settings and reads nothing. Two of a node's settings live outside that
mapping: a ModelMesh ``etcd_connection`` file that ``KV_STORE`` may name (its
``model-serving-etcd`` Secret, mounted), and this host's name, the default
instance id. This edge reads both and hands the settings a plain mapping.
"""

from __future__ import annotations

import pathlib
import socket
from collections.abc import Mapping

from mesh.core import errors, etcd_connection


def completed(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with an ``etcd_connection`` file's variables and a default
    ``MM_INSTANCE_ID`` (this host's name) filled in."""
    out = dict(env)
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
